"""`GroupedComm`: many CommModels behind one `time_s`, so one `costmodel.step.step_costs` call prices
plans of different dp/tp/cp degrees and placements at once (the planner's bulk pass,
`estimate_batch`).

Row i of every array is priced by the CommModel of its own (degrees, placement) group. A CommModel's
`time_s(axis, ...)` depends only on that axis's `GroupLink` (and the calibration, shared by all), and
the placement cache hands out one GroupLink object per axis shape, so each axis needs one call per
distinct GroupLink, not per group or per row; rows whose axis has one rank cost 0 (as in
`CommModel.time_s`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["GroupedComm", "AXES_PRICED"]

AXES_PRICED = ("tp", "cp", "dp", "pp")


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

    def __len__(self) -> int:
        return int(self.group.size)

    def link_codes(self, axis: str) -> np.ndarray:
        """Each row's GroupLink index on `axis` (rows with equal codes price equally); -1 = one rank."""
        return self._links[axis][1][self.group]

    def _partition(self, axis: str) -> list[tuple[Any, np.ndarray | None]]:
        """(representative CommModel, its rows; None = every row) per GroupLink of size > 1."""
        parts = self._parts.get(axis)
        if parts is None:
            reps, code = self._links[axis]
            rows_code = code[self.group]
            if len(reps) == 1 and rows_code.size and (rows_code == 0).all():
                parts = [(reps[0], None)]
            else:
                parts = [(rep, rows) for j, rep in enumerate(reps) if (rows := np.flatnonzero(rows_code == j)).size]
            self._parts[axis] = parts
        return parts

    def time_s(self, axis: str, op: str, nbytes: Any) -> np.ndarray:
        """Seconds of one `op` of `nbytes` (full buffer) on each row's `axis` group."""
        if axis not in self._links:
            raise ValueError(f"axis {axis!r} is not one of {AXES_PRICED}")
        n = self.group.size
        nb = np.broadcast_to(np.asarray(nbytes, dtype=float), (n,))
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
