"""Background jobs the UI starts (a training run, the profiler, a validation sweep): a `paraplan`
subcommand in its own process group, its log, and the files it writes, polled by the pages.

The job runs the same CLI a user would type, so the UI adds no second way to launch anything."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Job", "start_job", "paraplan_argv", "read_metrics", "read_json"]


def paraplan_argv(*args: str) -> list[str]:
    """argv for a `paraplan` subcommand with this interpreter (works without the console script)."""
    exe = shutil.which("paraplan", path=str(Path(sys.executable).parent))
    return [exe, *args] if exe else [sys.executable, "-m", "planner.cli", *args]


@dataclass
class Job:
    """A started subprocess: its argv, output folder and log file."""

    argv: list[str]
    out_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_s: float = field(default_factory=time.time)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def elapsed_s(self) -> float:
        return time.time() - self.started_s

    def log_tail(self, *, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    def stop(self, *, grace_s: float = 5.0) -> None:
        """Terminate the job's process group (torchrun and its workers), then kill what remains."""
        if not self.running or self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=grace_s)
        except ProcessLookupError:
            pass


def start_job(argv: list[str], *, out_dir: str | os.PathLike[str], cwd: str | None = None) -> Job:
    """Start `argv` in a new process group, stdout and stderr to `out_dir/job.log`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "job.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, start_new_session=True)
    return Job(argv=argv, out_dir=out, log_path=log_path, proc=proc)


def read_metrics(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Per-step metrics from a `metrics.jsonl` being written (a torn last line is skipped)."""
    rows: list[dict[str, Any]] = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return pd.DataFrame(columns=["step", "loss", "step_time_s", "tokens_per_s"])
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["step", "loss", "step_time_s", "tokens_per_s"])


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON object from disk, or None when missing or unreadable (still being written)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
