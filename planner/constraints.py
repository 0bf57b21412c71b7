"""What the user fixes or restricts in a search: `Constraints`, built from keyword arguments.

Every knob of `ParallelPlan` can be fixed (`tp=8`, `schedule="1f1b"`, `zero_stage=(1, 3)`) or
bounded (`max_pp=16`); unknown keywords and bad values raise ValueError naming the field."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from costmodel.specs import AXES
from costmodel.specs.limits import MAX_GLOBAL_BATCH, MAX_GPUS, MAX_LAYERS, shown

__all__ = ["Constraints", "SCHEDULES", "RECOMPUTES", "DEFAULT_PLACEMENTS", "TP_FIRST_PLACEMENTS", "ALL_PLACEMENTS"]

SCHEDULES: tuple[str, ...] = ("gpipe", "1f1b", "interleaved-1f1b", "zero-bubble")
RECOMPUTES: tuple[str, ...] = ("none", "selective", "full")
ALL_PLACEMENTS: tuple[tuple[str, ...], ...] = tuple(itertools.permutations(AXES))
TP_FIRST_PLACEMENTS: tuple[tuple[str, ...], ...] = tuple(p for p in ALL_PLACEMENTS if p[0] == "tp")
DEFAULT_PLACEMENTS: tuple[tuple[str, ...], ...] = (("tp", "cp", "dp", "pp"), ("tp", "cp", "pp", "dp"))
"""By default TP, then CP, stay innermost (on the fastest links) and DP and PP take both orders
(Megatron-LM's order, and pipeline neighbours inside a node); `placement="tp-first"` tries every
order with TP innermost, `placement="all"` all 24."""


def _ints(name: str, value: Any, *, allowed: Iterable[int] | None = None,
          at_most: tuple[int, str] | None = None) -> tuple[int, ...] | None:
    """Fixed values of a knob; `at_most` = (limit, what it counts): a larger value is refused."""
    if value is None:
        return None
    values = (value,) if isinstance(value, int | bool) or not isinstance(value, Iterable) else tuple(value)
    if not values:
        raise ValueError(f"{name}: give at least one value (or None to search all)")
    allowed_set = set(allowed) if allowed is not None else None
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allowed_set else 1):
            raise ValueError(f"{name}={shown(value)}: must be a positive integer or a list of them")
        if allowed_set is not None and v not in allowed_set:
            raise ValueError(f"{name}={shown(v)}: must be one of {sorted(allowed_set)}")
        if at_most is not None and v > at_most[0]:
            raise ValueError(f"{name}={v:,} exceeds the {at_most[0]:,} {at_most[1]} paraplan models (docs/LIMITS.md)")
    return tuple(sorted(set(values)))


def _strs(name: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (str, Iterable)):
        raise ValueError(f"{name}={shown(value)}: must be one of {', '.join(allowed)} or a list of them")
    values = (value,) if isinstance(value, str) else tuple(value)
    if not values:
        raise ValueError(f"{name}: give at least one value (or None to search all)")
    for v in values:
        if v not in allowed:
            raise ValueError(f"{name}={shown(v)}: must be one of {', '.join(allowed)}")
    return tuple(v for v in allowed if v in values)


def _bound(name: str, value: Any, *, at_most: int | None = None) -> int | None:
    """A positive bound; above `at_most` (a size paraplan does not model) it is capped there, since a
    bound beyond every possible value constrains nothing."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={shown(value)}: must be a positive integer")
    return value if at_most is None else min(value, at_most)


def _placements(value: Any) -> tuple[tuple[str, ...], ...]:
    if value is None:
        return DEFAULT_PLACEMENTS
    if value == "all":
        return ALL_PLACEMENTS
    if value == "tp-first":
        return TP_FIRST_PLACEMENTS
    bad = (f"placement={shown(value)}: must order each of {', '.join(AXES)} exactly once "
           "(e.g. 'tp-cp-dp-pp'), or be 'tp-first' or 'all', or a list of orders")
    if not isinstance(value, (str, Iterable)):
        raise ValueError(bad)
    items = [value] if isinstance(value, str) else list(value)
    if items and all(isinstance(x, str) and x in AXES for x in items):
        items = [items]   # one order given as a list of axes
    if not items:
        raise ValueError(bad)
    out = []
    for item in items:
        if not isinstance(item, (str, Iterable)):
            raise ValueError(bad)
        order = tuple(item.replace(",", "-").split("-")) if isinstance(item, str) else tuple(item)
        if not all(isinstance(a, str) for a in order) or sorted(order) != sorted(AXES):
            raise ValueError(f"placement={shown(item)}: must order each of {', '.join(AXES)} exactly once "
                             "(e.g. 'tp-cp-dp-pp'), or be 'tp-first' or 'all'")
        if order not in out:
            out.append(order)
    return tuple(out)


@dataclass(frozen=True)
class Constraints:
    """Restrictions on the search space. A tuple fixes a knob to those values; None leaves it free."""

    dp: tuple[int, ...] | None = None
    tp: tuple[int, ...] | None = None
    pp: tuple[int, ...] | None = None
    cp: tuple[int, ...] | None = None
    ep: tuple[int, ...] | None = None
    max_dp: int | None = None
    max_tp: int | None = None
    max_pp: int | None = None
    max_cp: int | None = None
    max_ep: int | None = None
    micro_batch_size: tuple[int, ...] | None = None
    max_micro_batch_size: int = 16
    virtual_stages: tuple[int, ...] | None = None
    max_virtual_stages: int = 8
    schedule: tuple[str, ...] | None = None
    zero_stage: tuple[int, ...] | None = None
    recompute: tuple[str, ...] | None = None
    sequence_parallel: tuple[bool, ...] | None = None
    placement: tuple[tuple[str, ...], ...] = DEFAULT_PLACEMENTS
    num_gpus: int | None = None
    allow_fewer_gpus: bool = False
    min_gpus: int = 1
    uneven_stages: bool = True
    uneven_interleaved: bool = False

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Constraints:
        """Validate user keywords (`tp=8`, `max_pp=16`, `schedule="1f1b"`, `allow_fewer_gpus=True`)."""
        known = {f.name for f in fields(cls)}
        for key in kwargs:
            if key not in known:
                raise ValueError(f"{key}: unknown search constraint; known: {', '.join(sorted(known))}")
        kw = {k: v for k, v in kwargs.items() if v is not None}
        out: dict[str, Any] = {}
        for axis in ("dp", "tp", "pp", "cp", "ep"):
            out[axis] = _ints(axis, kw.get(axis), at_most=(MAX_GPUS, "GPUs"))
            out[f"max_{axis}"] = _bound(f"max_{axis}", kw.get(f"max_{axis}"), at_most=MAX_GPUS)
        out["micro_batch_size"] = _ints("micro_batch_size", kw.get("micro_batch_size"),
                                        at_most=(MAX_GLOBAL_BATCH, "sequences per step"))
        out["max_micro_batch_size"] = _bound("max_micro_batch_size", kw.get("max_micro_batch_size", 16),
                                             at_most=MAX_GLOBAL_BATCH)
        out["virtual_stages"] = _ints("virtual_stages", kw.get("virtual_stages"), at_most=(MAX_LAYERS, "Transformer blocks"))
        out["max_virtual_stages"] = _bound("max_virtual_stages", kw.get("max_virtual_stages", 8), at_most=MAX_LAYERS)
        out["schedule"] = _strs("schedule", kw.get("schedule"), SCHEDULES)
        out["zero_stage"] = _ints("zero_stage", kw.get("zero_stage"), allowed=(0, 1, 2, 3))
        out["recompute"] = _strs("recompute", kw.get("recompute"), RECOMPUTES)
        sp = kw.get("sequence_parallel")
        if sp is not None:
            sp_values = (sp,) if isinstance(sp, bool) else tuple(sp)
            if not sp_values or any(not isinstance(v, bool) for v in sp_values):
                raise ValueError(f"sequence_parallel={sp!r}: must be True, False or None (search both)")
            out["sequence_parallel"] = tuple(sorted(set(sp_values)))
        out["placement"] = _placements(kw.get("placement"))
        out["num_gpus"] = _bound("num_gpus", kw.get("num_gpus"), at_most=MAX_GPUS)
        fewer = kw.get("allow_fewer_gpus", False)
        if not isinstance(fewer, bool):
            raise ValueError(f"allow_fewer_gpus={fewer!r}: must be True or False")
        out["allow_fewer_gpus"] = fewer
        out["min_gpus"] = _bound("min_gpus", kw.get("min_gpus", 1), at_most=MAX_GPUS + 1)
        uneven = kw.get("uneven_stages", True)
        if not isinstance(uneven, bool):
            raise ValueError(f"uneven_stages={uneven!r}: must be True (balance layers over stages) or False")
        out["uneven_stages"] = uneven
        inter = kw.get("uneven_interleaved", False)
        if not isinstance(inter, bool):
            raise ValueError(f"uneven_interleaved={inter!r}: must be True or False")
        out["uneven_interleaved"] = inter
        return cls(**out)

    def axis_allowed(self, axis: str, values: Any) -> Any:
        """Boolean mask (numpy) of degrees `values` on `axis` that the constraints allow."""
        import numpy as np

        values = np.asarray(values)
        mask = np.ones(values.shape, dtype=bool)
        fixed = getattr(self, axis)
        if fixed is not None:
            mask &= np.isin(values, fixed)
        bound = getattr(self, f"max_{axis}")
        if bound is not None:
            mask &= values <= bound
        return mask
