"""Explaining a failed run: which rank failed first, and why, in one line.

Two sources: the failure records workers write before exiting (`<out>/failures/rank<R>.json`: the
exception), and torchrun's "Root Cause" report (exit code or signal of a rank that died without a word,
e.g. SIGKILL by the OOM killer). Errors a rank raises only because a peer vanished (Gloo "Connection
closed by peer", NCCL watchdog aborts) are secondary and named only when nothing else is known.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["RunFailed", "explain_failure", "read_failures", "parse_report"]

_SECONDARY = re.compile(r"closed by peer|remote worker|Connection reset|peer.*(died|crash)|"
                        r"NCCL.*(abort|watchdog)|ProcessGroup.*(abort|shut)|Broken pipe", re.IGNORECASE)


class RunFailed(RuntimeError):
    """A training job that ended with an error; the message names the rank and the cause."""

    def __init__(self, message: str, *, returncode: int, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.log_path = log_path


def read_failures(out_dir: Path) -> list[dict[str, Any]]:
    """Worker failure records of the latest attempt, earliest first."""
    records = []
    for path in sorted((out_dir / "failures").glob("rank*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    if records:
        last = max(r.get("restart", 0) for r in records)
        records = [r for r in records if r.get("restart", 0) == last]
    return sorted(records, key=lambda r: r.get("time_unix_s", 0.0))


def parse_report(log_tail: str) -> list[dict[str, Any]]:
    """Every failed rank in torchrun's last failure report: [{'rank', 'exitcode', 'signal'}], in order."""
    start = log_tail.rfind("Failures:")
    if start < 0:
        return []
    out = []
    for chunk in re.split(r"\n\s*\[\d+\]:\s*\n", log_tail[start:])[1:]:
        rank = re.search(r"^\s*rank\s*:\s*(\d+)", chunk, re.MULTILINE)
        code = re.search(r"^\s*exitcode\s*:\s*(-?\d+)[^\n]*", chunk, re.MULTILINE)
        if rank is None:
            continue
        sig = re.search(r"\((SIG[A-Z0-9]+)\)", code.group(0)) if code else None
        out.append({"rank": int(rank.group(1)), "exitcode": int(code.group(1)) if code else None,
                    "signal": sig.group(1) if sig else None})
    return out


def explain_failure(out_dir: Path, log_tail: str, returncode: int) -> str:
    """One line: 'rank R <cause> (...)', from the worker records and torchrun's report."""
    records = read_failures(out_dir)
    report = parse_report(log_tail)
    log = out_dir / "launch.log"
    primary = [r for r in records if not _SECONDARY.search(r.get("error", ""))]
    killed = [e for e in report if e["signal"] and e["signal"] != "SIGTERM"]
    if killed:
        # a signal other than torchrun's own SIGTERM (SIGKILL by the OOM killer or a user, SIGSEGV) is
        # the root cause; the others' errors follow from it
        e = killed[0]
        return (f"rank {e['rank']} died from signal {e['signal']} (exit code {e['exitcode']}); "
                f"torchrun stopped the other ranks; see {log}")
    if primary:
        r = primary[0]
        return (f"rank {r['rank']} failed: {r['error']} (at {r.get('where', '?')}); torchrun stopped the "
                f"other ranks; see {log}")
    if records:
        r = records[0]
        return f"rank {r['rank']} failed: {r['error']} (at {r.get('where', '?')}); see {log}"
    exited = [e for e in report if e["signal"] is None]
    if exited:
        return f"rank {exited[0]['rank']} exited with code {exited[0]['exitcode']}; see {log}"
    lines = [ln.strip() for ln in log_tail.splitlines() if ln.strip()]
    return f"torchrun exited with code {returncode}: {lines[-1] if lines else 'no output'}; see {log}"
