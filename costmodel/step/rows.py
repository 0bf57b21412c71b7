"""Pricing each distinct row once: `costmodel.step.costs` on arrays of plans prices block costs and the
pipeline on the distinct rows of the knobs they depend on and indexes the results back to every
row (same numbers, fewer array passes). `distinct_rows` finds them, `take_knobs` / `take_unit`
select rows, and `RowsOf` is a BlockCost/EndCost of distinct rows seen through an index, each field
indexed out only when first read (most callers read a few fields)."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy as np

from ..layer.context import Knobs

__all__ = ["PIPELINE_KNOBS", "UNIT_KNOBS", "distinct_rows", "take_knobs", "take_unit", "take_units", "RowsOf", "at_rows"]

UNIT_KNOBS = (("tp", "cp", "ep", "mb", "sp", "recompute"), ("tp", "cp", "ep"))
"""(knobs, comm axes) a block's, the embedding's and the head's costs depend on."""
PIPELINE_KNOBS = (("dp", "tp", "cp", "ep", "mb", "sp", "recompute", "v", "schedule"), ("tp", "cp", "ep", "pp"))
"""(knobs, comm axes) the pipeline of a step depends on: not ZeRO, not the data-parallel links."""


def at_rows(value: Any, rows: np.ndarray | slice) -> Any:
    """value[rows] for per-row arrays; numbers as they are."""
    return value[rows] if isinstance(value, np.ndarray) and value.ndim else value


def distinct_rows(k: Knobs, comm: Any, names: tuple[str, ...], axes: tuple[str, ...], *,
                  repeats: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(first row, inverse) of the distinct rows of array knobs `names` and (GroupedComm) link codes
    on `axes`, or None for scalar knobs, small arrays, or fewer than `repeats` rows per distinct row."""
    if not isinstance(k.mb, np.ndarray) or k.mb.size <= 64:
        return None
    cols = [getattr(k, name) for name in names]
    if hasattr(comm, "link_codes"):
        cols += [comm.link_codes(axis) + 1 for axis in axes]
    code = np.zeros(k.mb.size, dtype=np.int64)
    for col in cols:
        if isinstance(col, np.ndarray):
            col = col.astype(np.int64, copy=False)
            code = code * (int(col.max()) + 1) + col
    uniq, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    if uniq.size * repeats >= code.size:
        return None
    return first, inverse.ravel()


def take_knobs(k: Knobs, rows: np.ndarray) -> Knobs:
    """The knobs of rows `rows`: per-row (1-D) knobs are indexed; scalars and knobs that vary along
    another axis (a column such as the bulk pass's ZeRO stages, shape (stages, 1)) stay as they are."""
    return replace(k, **{f.name: v[rows] for f in fields(k)
                         if isinstance(v := getattr(k, f.name), np.ndarray) and v.ndim == 1})


class RowsOf:
    """A BlockCost/EndCost `unit` of distinct rows seen through `index` (row i is unit row index[i]):
    reads like the dataclass, each field indexed out on first read and kept."""

    def __init__(self, unit: Any, index: np.ndarray) -> None:
        self._unit, self._index = unit, index

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        value = at_rows(getattr(self._unit, name), self._index)
        setattr(self, name, value)
        return value

    def __repr__(self) -> str:
        return f"RowsOf({type(self._unit).__name__}, {self._index.size} rows)"


def take_units(units: tuple, rows: np.ndarray) -> tuple:
    """`take_unit` of each of (enc, dec, embed, head); dec stays enc's object when it is (decoder-only)."""
    out = [take_unit(u, rows) for u in units]
    if units[1] is units[0]:
        out[1] = out[0]
    return tuple(out)


def take_unit(unit: Any, rows: np.ndarray | slice) -> Any:
    """The BlockCost/EndCost (or RowsOf) of rows `rows` (an index array or a bounded slice), lazily
    (indices compose, nothing is copied)."""
    if isinstance(unit, RowsOf):
        index = unit._index
        if isinstance(index, slice):   # a bounded slice seen as the range it selects
            index = range(index.start or 0, index.stop, index.step or 1)
            index = index[rows] if isinstance(rows, slice) else np.arange(index.start, index.stop, index.step)[rows]
            if isinstance(index, range):
                index = slice(index.start, index.stop, index.step)
            return RowsOf(unit._unit, index)
        return RowsOf(unit._unit, index[rows])
    return RowsOf(unit, rows)
