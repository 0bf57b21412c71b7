"""Input fields that keep their value across pages and check numbers inline.

Streamlit drops a widget's state when a page that does not draw it runs, so every input keeps its
value under a second key (`_keep_<key>`) and is redrawn from it: switching pages keeps the inputs.

Numbers are plain fields checked here, not by the browser: a value out of range stays in the field
with an error under it naming the range, and the pages show no result until it is fixed (a browser
bound would only turn the field red, keep the old results and explain it on hover only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

__all__ = ["kept", "keep_key", "number", "uploaded", "LIMITS"]


def keep_key(key: str) -> str:
    return f"_keep_{key}"


def kept(widget: Callable[..., Any], label: str, *args: Any, key: str, default: Any, **kwargs: Any) -> Any:
    """Draw `widget` (st.number_input, a column's selectbox, ...) whose value survives page switches."""
    ss = st.session_state
    if keep_key(key) not in ss:
        ss[keep_key(key)] = ss.get(key, default)
    ss[key] = ss[keep_key(key)]

    def _sync() -> None:
        ss[keep_key(key)] = ss[key]

    value = widget(label, *args, key=key, on_change=_sync, **kwargs)
    ss[keep_key(key)] = value
    return value


def uploaded(label: str, *, key: str, types: list[str]) -> tuple[str, bytes] | None:
    """A file uploader whose file (name, bytes) survives page switches until the user clears it."""
    ss = st.session_state

    def _sync() -> None:
        f = ss.get(key)
        ss[keep_key(key)] = (f.name, f.getvalue()) if f is not None else None

    upload = st.file_uploader(label, type=types, key=key, on_change=_sync)
    if upload is not None:
        ss[keep_key(key)] = (upload.name, upload.getvalue())
    stored = ss.get(keep_key(key))
    if upload is None and stored is not None:
        st.caption(f"Using {stored[0]} (uploaded earlier).")
    return stored



LIMITS: dict[str, tuple[float, float]] = {
    "nodes": (1, 65536), "global_batch": (1, 16_777_216), "seq_len": (1, 1_048_576), "constraint": (0, 1_048_576),
    "cm_layers": (1, 1024), "cm_hidden": (1, 131072), "cm_heads": (1, 1024), "cm_kv": (0, 1024),
    "cm_ffn": (0, 524288), "cm_vocab": (1, 1_000_000), "cm_maxseq": (1, 1_048_576), "cm_dec": (1, 1024),
    "bw": (0.001, 1e6), "moe_imbalance": (1.0, 1e3),
}
"""Accepted ranges of the number fields (inclusive): the planner's largest cluster, batches and sequences
that its arrays hold, model shapes the catalog's largest models stay well within, link speeds in GB/s."""


def number(container: Any, label: str, *, key: str, default: float, limits: tuple[float, float],
           kind: type = int, step: float | None = None, help: str | None = None, what: str | None = None
           ) -> float | None:
    """A number field kept across pages; its value, or None with an error under it when the value is
    out of `limits` (inclusive) - the field keeps what the user typed."""
    value = kept(container.number_input, label, key=key, default=kind(default),
                 step=kind(step if step is not None else 1), help=help,
                 format="%d" if kind is int else None)
    lo, hi = limits
    if value is None:
        container.error(f"{what or label}: enter a number ({lo:,g} to {hi:,g}).")
        return None
    if not lo <= value <= hi:
        side = f"less than {lo:,g}" if value < lo else f"more than {hi:,g}"
        container.error(f"{what or label}: {value:,g} is {side}; use {lo:,g} to {hi:,g}.")
        return None
    return kind(value)
