"""The long fuzz profile: >= 10,000 random and hostile cases through the public API and the CLI
(tests/_fuzz.py: what is generated, what is checked, how each call's time and memory are bounded),
with fresh hypothesis seeds; the figures go into docs/BENCHMARKS.md between the fuzz markers.

Run: `python -m benchmarks fuzz` (about 10 minutes on one core). `PARAPLAN_FUZZ_CASES=N` changes the
API case count (the CLI gets a tenth of it), `PARAPLAN_FUZZ_SEED=S` repeats a run."""

from __future__ import annotations

import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["main", "run"]


def run(api_cases: int, cli_cases: int, seed: int):   # noqa: ANN201 - returns tests/_fuzz.Tally
    """A Tally of `api_cases` API and `cli_cases` CLI cases drawn from `seed`."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import _fuzz
        from hypothesis import HealthCheck, given, settings
        from hypothesis import seed as with_seed
    finally:
        sys.path.remove(str(ROOT / "tests"))
    tally = _fuzz.Tally()
    for strategy, count, offset in ((_fuzz.api_cases(), api_cases, 0), (_fuzz.cli_cases(), cli_cases, 1)):
        @with_seed(seed + offset)
        @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(strategy)
        def one(case: _fuzz.Case) -> None:
            tally.add(case, _fuzz.run_case(case))

        one()
    return tally


def main() -> None:
    from costmodel.atomic import update_section

    api = int(os.environ.get("PARAPLAN_FUZZ_CASES", "10000"))
    cli = max(1, api // 10)
    seed = int(os.environ.get("PARAPLAN_FUZZ_SEED", random.randrange(1 << 30)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    tally = run(api, cli, seed)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(tally.by_kind.items(), key=lambda kv: -kv[1]))
    status = {k: tally.by_status.get(k, 0) for k in ("ok", "refused", "defect")}
    print(f"fuzz: {tally.cases:,} cases (seed {seed}): {status}; peak {tally.peak_bytes / 2 ** 20:.0f} MiB above the "
          f"start of a call, slowest {tally.slowest_s:.2f} s, {wall:.0f} s in all")
    for line in tally.defects[:20]:
        print("  defect:", line[:2000])
    lines = [
        "## Fuzzing the API and the CLI (hypothesis)", "",
        f"Reproduce: `PARAPLAN_FUZZ_SEED={seed} python -m benchmarks fuzz` (part of `make bench`; without the "
        "seed every run draws new cases). The bounded profile in `make test` is tests/test_planner_fuzz.py "
        "(380 derandomized cases). What is generated and checked: tests/_fuzz.py (cases in tests/_fuzz_cases.py, checks in tests/_fuzz_checks.py).", "",
        "| figure | value |", "|---|---|",
        f"| cases | {tally.cases:,} ({api:,} API, {cli:,} CLI) |",
        f"| by kind | {kinds} |",
        f"| answered / refused with one line / defects | {status['ok']:,} / {status['refused']:,} / {status['defect']:,} |",
        f"| peak memory of one call above its start (RSS high-water mark; CLI: forked child) | "
        f"{tally.peak_bytes / 2 ** 20:,.0f} MiB (limit 2,048 MiB) |",
        f"| slowest call (CPU time) | {tally.slowest_s:.2f} s (limit 10 s) |",
        f"| whole run | {wall / 60:.1f} min, {rss:,.0f} MiB peak RSS of the benchmark process |",
        "",
        "A case passes when it ends in a result whose numbers are finite and non-negative (NaN only where "
        "documented: a sweep point or `estimate_batch` row without a plan), or in a ValueError/OSError "
        "with a one-line message; a command line with exit 0/1 and its output, or exit 2 and one "
        "`paraplan: error:` line. `estimate_batch` rows must equal `estimate`, and `estimate(timeline=True)` "
        "must equal `estimate()`.", "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, load average {load:.1f} at start "
        "(2 cores shared with other jobs)."]
    update_section(ROOT / "docs" / "BENCHMARKS.md", "fuzz", "\n".join(lines))
    if tally.defects:
        raise SystemExit(f"fuzz: {len(tally.defects)} defects")


if __name__ == "__main__":
    main()
