"""Sizes paraplan models, and the strict field types every spec uses for what a user types.

The limits are far above anything built or trained, and low enough that every answer stays bounded
in time and memory (docs/LIMITS.md lists them with their reasons): a request beyond one is refused
with a message naming the field and the limit, never run until the machine gives out.

- `MAX_GPUS`: GPUs in one cluster, 2^20 = 1,048,576. The largest training clusters announced hold
  ~2x10^5 GPUs (xAI Colossus, 2025); a plan over 2^20 GPUs is priced with arrays of 2^20 ranks.
- `MAX_GPUS_PER_NODE`: 1,024 (the largest NVLink domains announced hold 576 GPUs, NVL576).
- `MAX_LAYERS`: 1,024 Transformer blocks (DeepNet trained 1,000; production models have <= 200).
  The planner's stage balancing is a dynamic programme over an L x L matrix.
- `MAX_WIDTH`: 2^20 for hidden, FFN and head sizes (production models stay below 2^16); `MAX_HEADS`
  2^16 attention heads.
- `MAX_EXPERTS`: 2^20 routed (or shared) experts per MoE layer, and as many per token (production
  mixtures hold <= 384; He 2024, "Mixture of A Million Experts", routes over 1024^2 = 2^20).
- `MAX_VOCAB`: 2^24 tokens (production vocabularies hold <= 2^18).
- `MAX_SEQ_LEN`: 2^24 tokens per sequence (the longest contexts trained are ~10^7).
- `MAX_GLOBAL_BATCH`: 2^24 sequences per step (8 per GPU on the largest cluster is 2^23).
- `MAX_NICS_PER_NODE`: 1,024.
- Hardware figures within physical ranges (`RANGES`): dense peak 10^6-10^20 FLOP/s, memory 10^6-10^16
  bytes, memory and link bandwidth 10^3-10^16 bytes/s, latency at most 10 s, oversubscription at
  most 10^4. Outside them a step time overflows what a float holds. A load share (MoE imbalance,
  capacity factor) at most 2^20 times the mean: a rank cannot take more than every rank's tokens.
"""

from __future__ import annotations

import math
import numbers
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

__all__ = ["MAX_GPUS", "MAX_GPUS_PER_NODE", "MAX_NICS_PER_NODE", "MAX_LAYERS", "MAX_WIDTH", "MAX_HEADS",
           "MAX_EXPERTS", "MAX_VOCAB", "MAX_SEQ_LEN", "MAX_GLOBAL_BATCH", "RANGES", "Whole", "Flag", "Number", "number_in", "whole_up_to",
           "shown"]

MAX_GPUS = 1 << 20
MAX_GPUS_PER_NODE = 1024
MAX_NICS_PER_NODE = 1024
MAX_LAYERS = 1024
MAX_WIDTH = 1 << 20
MAX_HEADS = 1 << 16
MAX_EXPERTS = 1 << 20
MAX_VOCAB = 1 << 24
MAX_SEQ_LEN = 1 << 24
MAX_GLOBAL_BATCH = 1 << 24
RANGES = {"flops": (1e6, 1e20, "FLOP/s"), "bytes": (1e6, 1e16, "bytes"), "bw": (1e3, 1e16, "bytes/s"),
          "latency": (0.0, 10.0, "s"), "oversubscription": (1.0, 1e4, ""),
          "imbalance": (0.0, float(MAX_GPUS), "x the mean")}
"""(lowest, highest, unit) of hardware figures paraplan models."""


def shown(value: Any, limit: int = 40) -> str:
    """`repr(value)`, cut to `limit` characters (a message never quotes a 100k-character input)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _whole(value: Any) -> Any:
    """A whole number: an int (or numpy integer), not a bool, a float or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"must be a whole number, got {shown(value)}")
    return int(value)


def _flag(value: Any) -> Any:
    """true or false: not 0/1 or a string."""
    if type(value).__name__ not in ("bool", "bool_"):
        raise ValueError(f"must be true or false, got {shown(value)}")
    return bool(value)


def _number(value: Any) -> Any:
    """A finite real number (a string such as '80e9', as YAML reads it, is parsed), not a bool."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {shown(value)}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"must be a number, got {shown(value)}") from None
    if not isinstance(value, numbers.Real):
        raise ValueError(f"must be a number, got {shown(value)}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {shown(value)}")
    return value


Whole = Annotated[int, BeforeValidator(_whole)]
"""An int field that refuses true/false, 8.0 and '8' (pydantic's lax mode reads them as 1 and 8)."""
Flag = Annotated[bool, BeforeValidator(_flag)]
"""A bool field that refuses 1, 'yes' and 'no'."""
Number = Annotated[float, BeforeValidator(_number)]
"""A float field that refuses true/false, NaN and infinities."""


def whole_up_to(limit: int, what: str) -> Any:
    """A `Whole` field of at most `limit`, refused beyond with a message naming what it counts."""
    def check(value: int) -> int:
        if value > limit:
            raise ValueError(f"{value:,} exceeds the {limit:,} {what} paraplan models (docs/LIMITS.md)")
        return value
    return Annotated[int, BeforeValidator(_whole), AfterValidator(check)]


def number_in(kind: str) -> Any:
    """A `Number` field within `RANGES[kind]`, refused outside it with the range in the message."""
    lo, hi, unit = RANGES[kind]

    def check(value: float) -> float:
        if not lo <= value <= hi:
            raise ValueError(f"{value:g} {unit} is outside the range paraplan models ({lo:g} to {hi:g}{' ' + unit if unit else ''}; "
                             "docs/LIMITS.md)")
        return value
    return Annotated[float, BeforeValidator(_number), AfterValidator(check)]
