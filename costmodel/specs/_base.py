"""Common base for every spec: frozen, unknown fields rejected, so a typo names the field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Spec", "format_validation_error"]


class Spec(BaseModel):
    """Frozen pydantic model that forbids unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: 'field: message'."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(plan)"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
