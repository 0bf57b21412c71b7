"""Atomic file writes: a temp file in the target's folder, fsync, then rename, so a reader (or a
crash) never sees half a file. The one writer every package uses for plans, profiles, reports."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_text_atomic", "write_bytes_atomic", "update_section"]


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
