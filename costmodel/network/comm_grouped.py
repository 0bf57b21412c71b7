"""`GroupedComm`: many CommModels behind one `time_s`, so one `costmodel.step.costs.step_costs` call prices
plans of different dp/tp/cp degrees and placements at once (the planner's bulk pass,
`estimate_batch`).

Row i of every array is priced by the CommModel of its own (degrees, placement) group. A CommModel's
`time_s(axis, ...)` depends only on that axis's `GroupLink` (and the calibration, shared by all), and
the placement cache hands out one GroupLink object per axis shape, so each axis needs one call per
distinct GroupLink, not per group or per row; rows whose axis has one rank cost 0 (as in
`CommModel.time_s`). Links whose CommModel prices by the formulas alone (no measured curve applies)
are priced together by one `costmodel.network.collectives_rows.LinkTable` expression per call; the others
(calibrated groups inside a server) one call per GroupLink."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .collectives_rows import VECTOR_OPS, link_table
from .comm import CommModel

__all__ = ["GroupedComm", "AXES_PRICED"]

AXES_PRICED = ("tp", "cp", "dp", "pp", "ep", "edp")


class GroupedComm:
    """Per-row CommModels: row i uses `comms[group[i]]`.

    `time_s(axis, op, nbytes)` takes a number or an array of one value per row and returns one time
    per row; `link_codes(axis)` is each row's GroupLink index on that axis (-1: a one-rank axis), and
    `take(rows)` the adapter of a subset of rows."""

    def __init__(self, comms: Sequence[Any], group: np.ndarray, *, _links: dict | None = None) -> None:
        self.group = np.asarray(group, dtype=np.int64)
        self.comms = tuple(comms)
        if _links is None:
            _links = {}
            for axis in AXES_PRICED:
                reps: list[Any] = []
                seen: dict[int, int] = {}
                code = np.empty(len(self.comms), dtype=np.int64)
                for j, comm in enumerate(self.comms):
                    link = comm.links[axis]
                    if link.size <= 1:
                        code[j] = -1
                        continue
                    idx = seen.get(id(link))
                    if idx is None:
                        idx = seen[id(link)] = len(reps)
                        reps.append(comm)
                    code[j] = idx
                _links[axis] = (tuple(reps), code)
        self._links = _links
        self._parts: dict[str, list[tuple[Any, np.ndarray | None]]] = {}
        self._codes: dict[str, tuple[Any, np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return int(self.group.size)

    def link_codes(self, axis: str) -> np.ndarray:
        """Each row's GroupLink index on `axis` (rows with equal codes price equally); -1 = one rank."""
        return self._links[axis][1][self.group]

    def _partition(self, axis: str) -> list[tuple[Any, np.ndarray | None]]:
        """(representative CommModel, its rows; None = every row) per GroupLink of size > 1."""
        parts = self._parts.get(axis)
        if parts is None:
            reps, code = self._links[axis][:2]
            rows_code = code[self.group]
            if len(reps) == 1 and rows_code.size and (rows_code == 0).all():
                parts = [(reps[0], None)]
            else:
                parts = [(rep, rows) for j, rep in enumerate(reps) if (rows := np.flatnonzero(rows_code == j)).size]
            self._parts[axis] = parts
        return parts

    def _table(self, axis: str) -> tuple[Any, np.ndarray, np.ndarray | None]:
        """(the axis's LinkTable constants at each row, each row's code, rows the table may not
        price: their CommModel would use a measured curve, or is not a plain CommModel; None if
        there are none)."""
        entry = self._links[axis]
        if len(entry) == 2:   # built once per set of links, shared with `take`'s adapters
            reps, code = entry
            plain = np.array([_formula_only(rep, rep.links[axis]) for rep in reps] + [True])
            entry = self._links[axis] = (reps, code, link_table([rep.links[axis] for rep in reps]), plain)
        hit = self._codes.get(axis)
        if hit is None:
            rows_code = entry[1][self.group]
            other = np.flatnonzero(~entry[3][rows_code])
            hit = self._codes[axis] = (entry[2].rows(rows_code), rows_code, other if other.size else None)
        return hit

    def time_s(self, axis: str, op: str, nbytes: Any) -> np.ndarray:
        """Seconds of one `op` of `nbytes` (full buffer) on each row's `axis` group."""
        if axis not in self._links:
            raise ValueError(f"axis {axis!r} is not one of {AXES_PRICED}")
        n = self.group.size
        nb = np.broadcast_to(np.asarray(nbytes, dtype=float), (n,))
        if op in VECTOR_OPS:
            consts, code, other = self._table(axis)
            out = consts.time_s(op, nb)
            if other is not None:   # calibrated groups: their own CommModel, one call per GroupLink
                reps = self._links[axis][0]
                for j in np.unique(code[other]).tolist():
                    rows = other[code[other] == j]
                    out[rows] = reps[j].time_s(axis, op, nb[rows])
            return out
        parts = self._partition(axis)
        if len(parts) == 1 and parts[0][1] is None:
            return np.asarray(parts[0][0].time_s(axis, op, np.array(nb)), dtype=float).reshape(n)
        out = np.zeros(n)
        for rep, rows in parts:
            out[rows] = rep.time_s(axis, op, nb[rows])
        return out

    def take(self, rows: np.ndarray) -> GroupedComm:
        """The adapter of rows `rows` (an index array) of this one."""
        return GroupedComm(self.comms, self.group[rows], _links=self._links)


def _formula_only(comm: Any, link: Any) -> bool:
    """Whether `comm.time_s` on `link` is `costmodel.network.collectives.collective_time_s` alone (a plain
    CommModel, memoized or not, with no measured curve for a group inside one server)."""
    inner = getattr(comm, "inner", comm)
    if type(inner).time_s is not CommModel.time_s:
        return False
    return getattr(inner, "calibration", None) is None or link.crosses_nodes
