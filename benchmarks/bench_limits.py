"""Bounded time and memory at the edges: each command of `CASES` runs as a user runs it (a subprocess,
address space capped at `CAP_BYTES`), and its wall time, peak RSS and first error line go into
docs/BENCHMARKS.md between the limits markers. docs/LIMITS.md lists the limits and these cases as
they were before the limits existed.

Run: `python -m benchmarks limits` (about 2 minutes; `plan` on 2^20 GPUs is most of it).
`python -m benchmarks.bench_limits --code DIR` measures another checkout (e.g. an older commit)."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAP_BYTES = 8 << 30
TIMEOUT_S = 300

BILLION_LAYERS = {"model_type": "llama", "num_hidden_layers": 10 ** 9, "hidden_size": 4096, "num_attention_heads": 32,
                  "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
                  "max_position_embeddings": 8192}
CASES = [
    ("estimate --nodes 1000000000000", ["estimate", "--nodes", "1000000000000"]),
    ("estimate --nodes 1000000", ["estimate", "--nodes", "1000000"]),
    ("plan --nodes 1000000", ["plan", "--nodes", "1000000", "--no-progress"]),
    ("estimate --nodes 131072 (2^20 GPUs, the largest cluster)", ["estimate", "--nodes", "131072"]),
    ("estimate --nodes 131072 --dp 8 (8 of 2^20 GPUs used)", ["estimate", "--nodes", "131072", "--dp", "8"]),
    ("plan --nodes 131072 (2^20 GPUs)", ["plan", "--nodes", "131072", "--no-progress"]),
    ("plan --model config.json (1e9 layers) --nodes 3", ["plan", "--model", "config.json", "--nodes", "3", "--no-progress"]),
]

__all__ = ["main", "measure", "CASES"]


def measure(args: list[str], *, code: Path = ROOT) -> dict[str, object]:
    """Wall seconds, peak RSS (MiB), exit code and the first error line of `paraplan ARGS` run from
    `code` (PYTHONPATH) in a scratch folder holding config.json (BILLION_LAYERS)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(BILLION_LAYERS))
        env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}

        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))

        err_path = Path(tmp) / "stderr.txt"
        t0 = time.perf_counter()
        with open(err_path, "w") as err_file:
            proc = subprocess.Popen([sys.executable, "-m", "planner.cli", *args], cwd=tmp, env=env,
                                    stdout=subprocess.DEVNULL, stderr=err_file, preexec_fn=cap)
        timer = threading.Timer(TIMEOUT_S, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)   # this child's own peak RSS
        timer.cancel()
        wall = time.perf_counter() - t0
        err = err_path.read_text(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    error = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
    return {"wall_s": wall, "rss_mib": usage.ru_maxrss / 1024, "code": code, "error": error[:160]}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    code = Path(argv[argv.index("--code") + 1]) if "--code" in argv else ROOT
    rows = []
    for label, args in CASES:
        res = measure(args, code=code)
        print(f"{label}: exit {res['code']}, {res['wall_s']:.1f} s, {res['rss_mib']:.0f} MiB; {res['error']}", flush=True)
        rows.append(f"| `{label}` | {res['code']} | {res['wall_s']:.1f} s | {res['rss_mib']:,.0f} MiB | "
                    f"{str(res['error']).replace('|', '/')} |")
    if code != ROOT:
        return
    from costmodel.atomic import update_section

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    body = "\n".join([
        "## Bounded time and memory at the edges", "",
        "Reproduce: `python -m benchmarks limits` (part of `make bench`). Each command runs as `paraplan ...` "
        f"in a subprocess capped at {CAP_BYTES >> 30} GiB of address space; peak RSS is the child's own "
        "(ru_maxrss from wait4). The limits and the same cases before them: docs/LIMITS.md.", "",
        "| command | exit | wall | peak RSS | error line |", "|---|---|---|---|---|", *rows, "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, load average {load:.1f} at start "
        "(2 cores shared with other jobs; wall times vary with the load)."])
    update_section(ROOT / "docs" / "BENCHMARKS.md", "limits", body)


if __name__ == "__main__":
    main()
