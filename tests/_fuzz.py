"""Property-based fuzzing of paraplan's public API and CLI (hypothesis): random and hostile model,
cluster, training and plan specs, plan files, model and Hugging Face config files, search constraints
and sweep values, and command lines built from them.

The property: every call ends, within `LIMIT_S` CPU-seconds and `LIMIT_BYTES` of memory above where it
started, either in a result whose numbers are finite and non-negative (NaN only where the API
documents it: a sweep point or an `estimate_batch` row without a plan), or in a ValueError/OSError
(a pydantic ValidationError is a ValueError) with a one-line message; a command line ends with exit 0
or 1 and its normal output, or exit 2 and one line 'paraplan: error: ...', never a traceback. A few
cross-checks come with it: `estimate_batch` rows equal `estimate`, and `estimate(timeline=True)`
equals `estimate()`.

Enforcement: API cases run in this process under a CPU-time timer (ITIMER_PROF), with the
resident-set high-water mark reset before each call (/proc/self/clear_refs) and read after it; CLI
cases run `planner.cli.main` in a forked child with RLIMIT_AS (its address space + `LIMIT_BYTES` +
slack), RLIMIT_CPU and a wall-clock guard against hangs, its CPU time and peak RSS read from wait4.
tests/test_planner_fuzz.py runs a bounded profile (`make test`), `python -m benchmarks fuzz` a long
one (>= 10,000 cases) and records the figures. The cases come from tests/_fuzz_cases.py (on the
strategies of tests/_fuzz_specs.py), the checks from tests/_fuzz_checks.py."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import resource
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _fuzz_cases import Case, api_cases, cli_cases, prepare
from _fuzz_checks import MAX_MESSAGE, Defect, check_cli, check_numbers, message
from _fuzz_specs import often
from hypothesis import strategies as st

__all__ = ["LIMIT_S", "LIMIT_BYTES", "Case", "Outcome", "Tally", "cases", "api_cases", "cli_cases", "run_case"]

LIMIT_S = 10.0
"""CPU seconds one call may take (CPU, not wall time: the suite shares 2 cores with other jobs)."""
WALL_GUARD_S = 120.0
"""Wall seconds after which a CLI case counts as hung."""
LIMIT_BYTES = 2 << 30

@dataclass
class Outcome:
    """How one case ended: 'ok', 'refused' (ValueError/OSError, exit 2) or 'defect' (with why)."""

    status: str
    seconds: float
    peak_bytes: int
    detail: str = ""


def _hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024
    except (OSError, AttributeError):
        return None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Timeout(BaseException):
    """Raised by the CPU timer: a BaseException, so no `except Exception` in the code under test eats
    it (the timer repeats every second, in case one lands in a finalizer that swallows it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def run_api(case: Case, tmp: Path) -> Outcome:
    """Run an API case here, under the time limit, measuring its peak RSS above the start."""
    timer = threading.current_thread() is threading.main_thread()   # signals reach the main thread only
    old = signal.signal(signal.SIGPROF, _alarm) if timer else None
    status, detail = "ok", ""
    seconds, peak = 0.0, 0
    try:
        call, check = prepare(case, tmp)
        base = _rss_bytes()
        measured = _reset_hwm()
        if timer:   # CPU time of this process: a busy shared host does not count against the call
            signal.setitimer(signal.ITIMER_PROF, LIMIT_S, 1.0)
        t0 = time.process_time()
        try:
            result = call()
        finally:
            if timer:
                signal.setitimer(signal.ITIMER_PROF, 0)
            seconds = time.process_time() - t0
            peak = max(0, (_hwm_bytes() or 0) - base) if measured else 0
        check(result)
        if case.kind == "batch":   # rows without a valid plan are NaN by design
            result = {k: v[result["valid"]] for k, v in result.items() if k not in ("valid", "fits")}
        check_numbers(result)
    except _Timeout:
        status, detail = "defect", f"over {LIMIT_S:.0f} CPU-s"
    except Defect as exc:
        status, detail = "defect", str(exc)
    except (ValueError, OSError) as exc:
        msg = message(exc)
        status = "refused"
        if not msg.strip() or "\n" in msg.strip() or len(msg) > MAX_MESSAGE:
            status, detail = "defect", f"{type(exc).__name__} message not one line: {msg[:500]!r}"
        else:
            detail = msg
    except MemoryError:
        status, detail = "defect", "MemoryError"
    except Exception as exc:   # noqa: BLE001 - any other exception is the defect being looked for
        status, detail = "defect", f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_tb(exc.__traceback__)[-3:])}"
    finally:
        if timer:
            signal.signal(signal.SIGPROF, old)
    if status != "defect" and seconds > LIMIT_S:
        status, detail = "defect", f"took {seconds:.1f} CPU-s"
    if status != "defect" and peak > LIMIT_BYTES:
        status, detail = "defect", f"peak {peak / 2 ** 30:.2f} GiB above the start"
    return Outcome(status, seconds, peak, detail)


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_cli(case: Case, tmp: Path) -> Outcome:
    """Run a CLI case: `planner.cli.main(argv)` in a forked child (cwd `tmp`, RLIMIT_AS, alarm)."""
    from planner.cli import main

    for name, text in case.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, errors="surrogateescape")
    out_path, err_path = tmp / ".stdout", tmp / ".stderr"
    base = _rss_bytes()
    limit = _vm_size() + LIMIT_BYTES + (1 << 30)
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()   # the child's collector leaves the parent's objects (and their pages) alone
    pid = os.fork()
    if pid == 0:   # child
        code = 3
        try:
            os.chdir(tmp)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            cpu = int(LIMIT_S) + 1   # CPU seconds (SIGXCPU), and a wall-clock guard against hangs
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
            signal.signal(signal.SIGXCPU, signal.SIG_DFL)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(int(WALL_GUARD_S))
            with open(out_path, "w") as out, open(err_path, "w") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout, sys.stderr = os.fdopen(1, "w", closefd=False), os.fdopen(2, "w", closefd=False)
                code = main(case.argv)
                sys.stdout.flush()
                sys.stderr.flush()
        except BaseException:   # noqa: BLE001 - report it through the exit code and stderr
            with contextlib.suppress(BaseException):
                traceback.print_exc()
                sys.stderr.flush()
            code = 4
        os._exit(code)
    gc.unfreeze()
    _, status, usage = os.wait4(pid, 0)
    seconds = usage.ru_utime + usage.ru_stime   # the child's CPU time
    peak = max(0, usage.ru_maxrss * 1024 - base)
    out = out_path.read_text(errors="replace") if out_path.exists() else ""
    err = err_path.read_text(errors="replace") if err_path.exists() else ""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        what = {signal.SIGXCPU: f"over {LIMIT_S:.0f} CPU-s", signal.SIGKILL: f"over {LIMIT_S:.0f} CPU-s",
                signal.SIGALRM: f"no answer within {WALL_GUARD_S:.0f} s (a hang)"}.get(sig, f"killed by signal {sig}")
        return Outcome("defect", seconds, peak, what)
    code = os.WEXITSTATUS(status)
    try:
        if code in (3, 4):
            raise Defect(f"uncaught exception in main: {err[-1500:]}")
        check_cli(code, out, err, case.argv)
    except Defect as exc:
        return Outcome("defect", seconds, peak, str(exc))
    if seconds > LIMIT_S:
        return Outcome("defect", seconds, peak, f"took {seconds:.1f} CPU-s")
    if peak > LIMIT_BYTES:
        return Outcome("defect", seconds, peak, f"peak {peak / 2 ** 30:.2f} GiB above the start")
    return Outcome("ok" if code in (0, 1) else "refused", seconds, peak, err.strip()[:300])


def run_case(case: Case) -> Outcome:
    """Run `case` in a fresh temporary folder."""
    with tempfile.TemporaryDirectory(prefix="paraplan-fuzz-") as tmp:
        return (run_cli if case.argv is not None else run_api)(case, Path(tmp))


@dataclass
class Tally:
    """Figures of a fuzz run."""

    cases: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)
    peak_bytes: int = 0
    slowest_s: float = 0.0
    seconds: float = 0.0

    def add(self, case: Case, outcome: Outcome) -> None:
        self.cases += 1
        self.by_status[outcome.status] = self.by_status.get(outcome.status, 0) + 1
        self.by_kind[case.kind] = self.by_kind.get(case.kind, 0) + 1
        self.peak_bytes = max(self.peak_bytes, outcome.peak_bytes)
        self.slowest_s = max(self.slowest_s, outcome.seconds)
        self.seconds += outcome.seconds
        if outcome.status == "defect":
            self.defects.append(f"{outcome.detail} <- {case.short()}")


def cases() -> st.SearchStrategy[Case]:
    """Every kind of case: API (four in five) and CLI."""
    return often(api_cases(), cli_cases(), odds=5)
