"""A run directory belongs to one run: a run in progress holds a lock on it, and a directory that already
holds a run is refused unless the new run continues it (`resume`) or replaces it (`overwrite`).

The lock is an advisory `flock` on `<out>/.paraplan.lock`, held by the launching process for the whole run
and released by the kernel when that process ends (however it ends), so a killed run never leaves a stale
lock. `overwrite` removes what a run leaves (metrics, summary, checkpoints, failure records), never
other files the user keeps there (the plan file the run was started from, for example).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from costmodel.atomic import blocking_parent

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: no locking
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RUN_OUTPUTS", "check_out_path", "previous_run", "lock_holder", "hold_run_dir"]

LOCK_FILE = ".paraplan.lock"
RUN_OUTPUTS = ("metrics.jsonl", "summary.json", "memory.json", "run.json", "launch.log", "checkpoints", "failures")
"""What a run writes into its directory (and `overwrite` removes)."""
_EVIDENCE = ("metrics.jsonl", "summary.json", "checkpoints")


def check_out_path(out: str | os.PathLike[str]) -> Path:
    """`out` as an absolute path that can be a run directory (ValueError naming the fix otherwise)."""
    path = Path(out).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"out: {str(path)!r} is a file; give a directory for the run (e.g. runs/NAME)")
    if blocked := blocking_parent(path):
        parent, why = blocked
        raise ValueError(f"out: {str(parent)!r} is a file, so {str(path)!r} cannot be a directory" if why == "file"
                         else f"out: cannot create {str(path)!r}: {str(parent)!r} is not writable")
    return path


def previous_run(out: Path) -> list[str]:
    """The files and folders of an earlier run in `out` (metrics, summary, checkpoints), if any."""
    found = []
    for name in _EVIDENCE:
        item = out / name
        if item.is_file() or (item.is_dir() and any(item.iterdir())):
            found.append(name)
    return found


def _try_lock(handle: IO[str]) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock_holder(out: Path) -> str | None:
    """The pid (as written in the lock file) of the run holding `out`, or None when it is free."""
    lock = out / LOCK_FILE
    if not lock.is_file():
        return None
    with open(lock, "a+") as handle:
        if _try_lock(handle):
            return None  # closing the file releases the probe's lock
        handle.seek(0)
        return handle.read().strip() or "unknown"


def _refusal(out: Path, *, resume: Path | None, overwrite: bool) -> str | None:
    if overwrite:
        return None
    found = previous_run(out)
    if not found:
        return None
    if resume is not None and (resume == out or out in resume.parents):
        return None  # continuing this directory's own run
    return (f"out: {str(out)!r} already holds a run ({', '.join(found)}); pass --resume {out} to continue it, "
            "--overwrite to replace it, or choose another --out")


@contextlib.contextmanager
def hold_run_dir(out: Path, *, resume: Path | None = None, overwrite: bool = False) -> Iterator[Path]:
    """Create `out`, lock it for this process, refuse it when it holds another run (see module doc), and
    with `overwrite` clear the earlier run's outputs; the lock is released on exit."""
    out = check_out_path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+") as handle:
        if not _try_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ValueError(f"out: {str(out)!r} is in use by another paraplan run (pid {holder}); wait for it "
                             "to finish or choose another --out")
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        reason = _refusal(out, resume=resume.resolve() if resume is not None else None, overwrite=overwrite)
        if reason:
            raise ValueError(reason)
        if overwrite:
            for name in RUN_OUTPUTS:
                item = out / name
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                elif item.exists() or item.is_symlink():
                    item.unlink()
        yield out
