"""Common base for every spec: frozen, unknown fields rejected, so a typo names the field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Spec", "format_validation_error", "read_json", "validate_spec"]

S = TypeVar("S", bound=BaseModel)


class Spec(BaseModel):
    """Frozen pydantic model that forbids unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: 'field: message'."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)   # a whole-spec rule names its fields itself
    return "; ".join(parts)


def read_json(path: str | os.PathLike[str], *, what: str, hint: str = "") -> Any:
    """The JSON content of `path`; a missing or malformed file raises ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist{'; ' + hint if hint else ''}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None


def validate_spec(cls: type[S], data: Any, *, where: str) -> S:
    """`cls.model_validate(data)`, with a one-line ValueError naming `where` and each bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{where}: {format_validation_error(exc)}") from None
