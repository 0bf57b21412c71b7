"""Atomic file writes: a temp file in the target's folder, fsync, then rename, so a reader (or a
crash) never sees half a file. The one writer every package uses for plans, profiles, reports."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_text_atomic", "write_bytes_atomic", "update_section", "check_output_path", "blocking_parent"]

_NAME_MAX, _PATH_MAX = 255, 4096   # POSIX limits of Linux file systems (bytes)


def _short(path: str, limit: int = 60) -> str:
    return path if len(path) <= limit else path[:limit - 3] + "..."


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """`path` if a file can be written there atomically: not an existing folder, no part of it an
    existing file, no name longer than the file system takes. Else ValueError saying which (a folder
    that does not exist yet is fine: the write creates it)."""
    text = os.fspath(path)
    if not text or text.endswith(os.sep):
        raise ValueError(f"{_short(text)!r} is not a file name; give one, e.g. out.json")
    if len(os.fsencode(text)) > _PATH_MAX or any(len(os.fsencode(p)) > _NAME_MAX for p in Path(text).parts):
        raise ValueError(f"{_short(text)!r}: file name too long (at most {_NAME_MAX} bytes a name, "
                         f"{_PATH_MAX} a path)")
    target = Path(text)
    if target.is_dir():
        raise ValueError(f"{_short(text)!r} is a folder; give a file name inside it, e.g. {_short(text)}/out.json")
    if blocked := blocking_parent(target):
        parent, why = blocked
        raise ValueError(f"{_short(text)!r}: {_short(str(parent))!r} is a file, not a folder" if why == "file"
                         else f"{_short(text)!r}: folder {_short(str(parent))!r} is not writable")
    return target


def blocking_parent(path: Path) -> tuple[Path, str] | None:
    """(the nearest existing ancestor of `path`, 'file' or 'unwritable') when it keeps `path` from being
    created (a file where a folder must be, or a folder this process cannot write into); None otherwise."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return parent, "file"
            if not os.access(parent, os.W_OK | os.X_OK):
                return parent, "unwritable"
            return None
    return None


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically, with the permissions a plain `open(path, 'w')` would give."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_bytes_atomic(path, text.encode())


def update_section(path: str | os.PathLike[str], name: str, body: str, *, title: str = "") -> Path:
    """Replace the text between `<!-- name:begin -->` and `<!-- name:end -->` in a Markdown file
    (appending the marked section when absent), keeping everything else; written atomically.
    Several writers (validation, benchmarks) share one document this way."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    target = Path(path)
    text = target.read_text() if target.exists() else (f"# {title}\n" if title else "")
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + block + "\n"
    return write_text_atomic(target, text)
