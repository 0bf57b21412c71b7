"""Numbers and messages as the app shows them: units on every figure (s, ms, GiB, TFLOP/s, tokens/s),
thousands separators, percentages; and messages in the app's words (sidebar labels), not the CLI's
flags or the specs' field names. Pure functions, no Streamlit."""

from __future__ import annotations

import math
import re

__all__ = ["GIB", "seconds", "gib", "tokens_per_s", "tflops", "percent", "signed_percent", "count", "ui_words",
           "FIELD_LABELS"]

GIB = 2**30
"""Bytes per GiB."""


def _bad(value: float | None) -> bool:
    return value is None or not math.isfinite(value)


def seconds(value: float | None) -> str:
    """A duration with its unit: '14.25 s', '96.3 ms', '412 us'."""
    if _bad(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f} s"
    if abs(value) >= 1:
        return f"{value:.2f} s"
    if abs(value) >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} us"


def gib(value_bytes: float | None, *, digits: int = 1) -> str:
    """Bytes as GiB ('49.4 GiB'); below 1 GiB in MiB ('213 MiB')."""
    if _bad(value_bytes):
        return "-"
    if abs(value_bytes) < GIB:
        return f"{value_bytes / 2**20:,.0f} MiB"
    return f"{value_bytes / GIB:,.{digits}f} GiB"


def tokens_per_s(value: float | None) -> str:
    """'588,536 tokens/s'."""
    return "-" if _bad(value) else f"{value:,.0f} tokens/s"


def tflops(value_flops_per_s: float | None) -> str:
    """FLOP/s as '186.3 TFLOP/s' (GFLOP/s below 1 TFLOP/s, as on a CPU)."""
    if _bad(value_flops_per_s):
        return "-"
    if abs(value_flops_per_s) < 1e12:
        return f"{value_flops_per_s / 1e9:,.1f} GFLOP/s"
    return f"{value_flops_per_s / 1e12:,.1f} TFLOP/s"


def percent(value: float | None, *, digits: int = 1) -> str:
    """A fraction as a percentage: 0.523 -> '52.3%'."""
    return "-" if _bad(value) else f"{value * 100:.{digits}f}%"


def signed_percent(value: float | None, *, digits: int = 1) -> str:
    """A relative error as a signed percentage: -0.081 -> '-8.1%'."""
    return "-" if _bad(value) else f"{value * 100:+.{digits}f}%"


def count(value: float | None) -> str:
    """An integer with thousands separators."""
    return "-" if _bad(value) else f"{value:,.0f}"


FIELD_LABELS = {
    "num_layers": "Layers", "hidden_size": "Hidden size", "num_heads": "Heads", "num_kv_heads": "KV heads",
    "ffn_hidden_size": "FFN size", "vocab_size": "Vocabulary", "max_seq_len": "Max sequence",
    "num_decoder_layers": "Decoder layers", "global_batch_size": "Global batch", "seq_len": "Sequence length",
    "micro_batch_size": "micro-batch", "scale_to": "Processes", "num_nodes": "Nodes",
}
"""Spec field names -> the app's input labels."""

_REWRITES: list[tuple[str, str]] = [
    (r"check --dp/--tp/--pp/--cp, their --max-\* bounds and the cluster size",
     "check the dp/tp/pp/cp constraints and their 'max' bounds (sidebar, Constraints) and the node count"),
    (r"--max-(dp|tp|pp|cp)\b", r"max \1 (sidebar, Constraints)"),
    (r"--max-micro-batch\b", "max micro-batch (sidebar, Constraints)"),
    (r"--(dp|tp|pp|cp)\b", r"\1 (sidebar, Constraints)"),
    (r"--seq-len\b", "Sequence length"), (r"--global-batch\b", "Global batch"), (r"--nodes\b", "Nodes"),
    (r"pass --scale-to (\d+)[^;.]*", r"use at most \1 processes"),
    (r"scale_to=(\d+) exceeds", r"Processes: \1 is more than"),
    (r"--(\w[\w-]*)", r"\1"),
    (r"\b(training|model|cluster|plan)\.(?=[a-z_]+\b)", ""),
    (r"\(plan\): ", ""), (r"\(model\): ", ""), (r"\(training\): ", ""),
    (r"Input should be greater than 0", "must be greater than 0"),
    (r"Field required", "is needed"),
]


def ui_words(message: str) -> str:
    """`message` with CLI flags and spec field names replaced by the app's labels."""
    out = message
    for pattern, repl in _REWRITES:
        out = re.sub(pattern, repl, out)
    for name, label in FIELD_LABELS.items():
        out = re.sub(rf"(?<!\w){name}(?=\W|$)", label, out)
    return out
