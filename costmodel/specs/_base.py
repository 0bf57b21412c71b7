"""Common base for every spec: frozen, unknown fields rejected, so a typo names the field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Spec", "format_validation_error", "read_json", "validate_spec", "is_file", "is_dir", "shown_path"]

S = TypeVar("S", bound=BaseModel)


class Spec(BaseModel):
    """Frozen pydantic model that forbids unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


def format_validation_error(exc: ValidationError) -> str:
    """One line for every problem: 'field: message' ('message' alone for a rule over several fields,
    whose message names them); an input quoted by the message is cut short (`limits.shown`)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def is_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a file; False (not an exception) for a name the file system cannot take
    (too long, an embedded NUL byte)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder; False for a name the file system cannot take."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def shown_path(path: str | os.PathLike[str], limit: int = 60) -> str:
    """`repr(str(path))`, cut to about `limit` characters for messages."""
    text = str(path)
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


MAX_SPEC_FILE_BYTES = 64 << 20
"""Spec, plan and config files larger than this are refused before they are read."""


def read_text(path: str | os.PathLike[str], *, what: str, hint: str = "") -> str:
    """The text of file `path`; a missing, unreadable, oversized or non-UTF-8 file raises ValueError
    naming it."""
    if not is_file(path):
        raise ValueError(f"{what} {shown_path(path)} does not exist{'; ' + hint if hint else ''}")
    try:
        size = Path(path).stat().st_size
        if size > MAX_SPEC_FILE_BYTES:
            raise ValueError(f"{what} {shown_path(path)} holds {size:,} bytes; spec files are at most "
                             f"{MAX_SPEC_FILE_BYTES:,}")
        return Path(path).read_text()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {shown_path(path)} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise ValueError(f"{what} {shown_path(path)} cannot be read: {exc.strerror or exc}") from None


def read_json(path: str | os.PathLike[str], *, what: str, hint: str = "") -> Any:
    """The JSON content of `path`; a missing or malformed file raises ValueError naming it."""
    text = read_text(path, what=what, hint=hint)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {shown_path(path)} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{what} {shown_path(path)} nests too deeply to be a spec") from None


def validate_spec(cls: type[S], data: Any, *, where: str) -> S:
    """`cls.model_validate(data)`, with a one-line ValueError naming `where` and each bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{where}: {format_validation_error(exc)}") from None
