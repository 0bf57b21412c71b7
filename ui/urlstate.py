"""Every input of the app lives in the URL (`st.query_params`), so a view can be bookmarked and sent.

Each input is a `Param`: its URL name, the session-state key of its widget, how to read it and its
default. The first run of a browser session reads the URL (`apply_url`): a value that parses goes into
its widget even when it is out of range, so the field shows it with its inline error (nothing is
replaced silently); a value that cannot be shown (not a number, an unknown model, ...) is kept out and
named in a notice at the top of the page (`show_notices`). Every run then writes the current inputs
back (`publish`): values equal to their default are left out, so links stay short.

Pure logic (`parse`, `encode`) is separate from the Streamlit calls, so it is tested without a page."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import streamlit as st

__all__ = ["Param", "parse", "encode", "apply_url", "publish", "show_notices", "register", "PARAMS", "MAX_SAFE_INT",
           "APPLIED_KEYS"]

MAX_SAFE_INT = 2**53 - 1
"""Largest integer a browser number field holds exactly (JavaScript's Number.MAX_SAFE_INTEGER)."""

_NOTICES = "_url_notices"
_APPLIED = "_url_applied"
APPLIED_KEYS = "_url_keys"
"""Session-state key: the widget keys the link set (so defaults that follow the model leave them alone)."""


@dataclass(frozen=True)
class Param:
    """One input in the URL. `kind`: 'int', 'float', 'str', 'bool' or 'list' (comma separated);
    `choices` (a callable, evaluated lazily) limits 'str' and 'list' values."""

    name: str
    key: str
    kind: str
    default: Any = None
    choices: Callable[[], Iterable[Any]] | None = None
    label: str = ""


PARAMS: dict[str, Param] = {}
"""Every registered input, by URL name (the sidebar's and each page's register theirs)."""


def register(*params: Param) -> None:
    for p in params:
        PARAMS[p.name] = p


def parse(param: Param, raw: str) -> Any:
    """The value of `raw` for `param`; ValueError (one line, in the app's words) when it cannot be shown."""
    label = param.label or param.name
    if param.kind in ("int", "float"):
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{param.name}={raw!r} is not a number ({label})") from None
        if not math.isfinite(value) or abs(value) > MAX_SAFE_INT:
            raise ValueError(f"{param.name}={raw!r} is out of any usable range ({label})")
        if param.kind == "int":
            if not value.is_integer():
                raise ValueError(f"{param.name}={raw!r} is not a whole number ({label})")
            return int(value)
        return value
    if param.kind == "bool":
        low = raw.lower()
        if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"{param.name}={raw!r}: use 1 or 0 ({label})")
        return low in ("1", "true", "yes", "on")
    known = list(param.choices()) if param.choices else None
    if param.kind == "list":
        items = [s.strip() for s in raw.split(",") if s.strip()]
        if known is not None:
            text = {str(k): k for k in known}
            bad = [s for s in items if s not in text]
            if bad:
                raise ValueError(f"{param.name}={raw!r}: {', '.join(bad)} not one of {', '.join(text)} ({label})")
            return [text[s] for s in items]
        return items
    if known is not None:
        text = {str(k): k for k in known}
        if raw not in text:
            shown = ", ".join(list(text)[:12]) + (", ..." if len(text) > 12 else "")
            raise ValueError(f"{param.name}={raw!r} is not one of {shown} ({label})")
        return text[raw]
    return raw


def encode(param: Param, value: Any) -> str | None:
    """The URL text of `value`, or None when it equals the default (left out of the URL)."""
    if value is None or value == param.default:
        return None
    if param.kind == "bool":
        return "1" if value else "0"
    if param.kind == "list":
        return ",".join(str(v) for v in value) if value else None
    if param.kind == "float":
        return f"{value:g}"
    return str(value)


def apply_url(*, ranges: dict[str, tuple[float, float]] | None = None) -> None:
    """Once per browser session: put the URL's values into their widgets' session state; values that
    cannot be shown become notices (`show_notices`), and so do values outside `ranges` (URL name ->
    inclusive bounds), which still go into their field, where its error names the range."""
    ss = st.session_state
    if ss.get(_APPLIED):
        return
    ss[_APPLIED] = True
    notices: list[str] = []
    applied: list[str] = []
    for name, raw in st.query_params.to_dict().items():
        param = PARAMS.get(name)
        if param is None:
            notices.append(f"{name}={raw!r} is not an input of this app.")
            continue
        try:
            value = parse(param, raw)
        except ValueError as exc:
            notices.append(f"{exc}; the field keeps {encode_default(param)}.")
            continue
        lo, hi = (ranges or {}).get(name, (-math.inf, math.inf))
        if isinstance(value, int | float) and not lo <= value <= hi:
            notices.append(f"{name}={raw} is out of range ({lo:,g} to {hi:,g}): it is in the {param.label or name} "
                           "field with the error; no results until it is changed.")
        ss[param.key] = value
        ss.pop(f"_keep_{param.key}", None)  # `ui.fields.kept` redraws from the preset
        applied.append(param.key)
    ss[_NOTICES] = notices
    ss[APPLIED_KEYS] = applied


def encode_default(param: Param) -> str:
    return "its default" if param.default in (None, "", []) else f"{param.default}"


def show_notices() -> None:
    """The URL's unusable values, shown at the top of the page until dismissed."""
    notices = st.session_state.get(_NOTICES) or []
    if not notices:
        return
    box = st.warning("**Link values not used.** " + " ".join(notices), icon=":material/link_off:")
    if st.button("Dismiss", key="url_notices_dismiss"):
        st.session_state[_NOTICES] = []
        box.empty()


def publish(values: dict[str, Any]) -> None:
    """Write inputs (URL name -> current value) into the URL; defaults are removed from it."""
    qp = st.query_params
    for name, value in values.items():
        text = encode(PARAMS[name], value)
        if text is None:
            if name in qp:
                del qp[name]
        elif qp.get(name) != text:
            qp[name] = text
