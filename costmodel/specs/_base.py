"""Common base for every spec: frozen, unknown fields rejected, so a typo names the field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Spec", "format_validation_error", "read_json", "read_yaml", "validate_spec", "is_file", "is_dir",
           "shown_path"]

_MAX_DEPTH = 64
"""Nesting a spec file may have (specs nest 3 deep); deeper text is refused before it is parsed."""

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
        parts.append(f"{loc}: {msg}" if loc else msg)   # a whole-spec rule names its fields itself
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
    if _too_deep(text):
        raise ValueError(f"{what} {shown_path(path)} nests deeper than {_MAX_DEPTH} levels; it is not a spec")
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


def _too_deep(text: str) -> bool:
    """Whether brackets or braces in `text` nest deeper than `_MAX_DEPTH` (a cheap upper bound on the
    nesting of JSON or YAML flow collections, checked before a parser recurses into them)."""
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return True
        elif ch in "]}":
            depth = max(0, depth - 1)
    return False


def read_yaml(path: str | os.PathLike[str], *, what: str) -> Any:
    """The content of a YAML or JSON spec file (JSON parsed as JSON); missing, unreadable, malformed or
    absurdly nested files raise ValueError naming the file."""
    import yaml

    text = read_text(path, what=what)
    where = f"{what} {shown_path(path)}"
    if "[" in text or "{" in text:
        if _too_deep(text):
            raise ValueError(f"{where} nests deeper than {_MAX_DEPTH} levels; it is not a spec")
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") or str(path).endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if str(path).endswith(".json"):
                raise ValueError(f"{where} is not valid JSON: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{where} is neither JSON nor YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ValueError(f"{where} nests too deeply to be a spec") from None
