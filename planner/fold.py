"""Folding equivalent plans: plans that differ only in `placement` and get the same figures from the
cost model are one choice for the user, shown once.

Two placements of the same plan often price identically: when every axis whose position changes
sits in the same place relative to the servers in both orders (e.g. dp and pp both spanning servers
over the same network), the cost model sees the same groups, links and sharing. `search` keeps the
first of such plans in ranking order (the lowest candidate index among equal keys) and lists the
others on it (`RankedPlan.equivalent`) with a one-line reason (`equivalence_note`). "The same
figures" means step time, every part of the time breakdown and every part of the memory breakdown
agree to a relative 1e-9 - so folding never hides a plan that is faster, smaller or different in any
reported number. `search(..., fold_equivalent=False)` (CLI `--all-placements`) keeps every plan."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from costmodel.network.placement import axis_stride
from costmodel.specs import ParallelPlan, StepEstimate

__all__ = ["EquivalenceFolder", "same_figures", "axis_span", "equivalence_note", "REL_TOL"]

REL_TOL = 1e-9
"""Relative tolerance under which two estimates count as the same figures."""

_TIME = ("compute_s", "tp_comm_s", "cp_comm_s", "dp_comm_s", "pp_comm_s", "bubble_s", "optimizer_s")
_MEMORY = ("parameters_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes", "buffers_bytes",
           "peak_bytes")


def _figures(est: StepEstimate) -> tuple[float, ...]:
    return (est.step_time_s, *(getattr(est.time, k) for k in _TIME), *(getattr(est.memory, k) for k in _MEMORY))


def same_figures(a: StepEstimate, b: StepEstimate, *, rel_tol: float = REL_TOL) -> bool:
    """Whether two estimates agree on step time, every time part and every memory part."""
    return all(math.isclose(x, y, rel_tol=rel_tol, abs_tol=1e-15) for x, y in zip(_figures(a), _figures(b),
                                                                                   strict=True))


def axis_span(plan: ParallelPlan, axis: str, gpus_per_node: int) -> str:
    """Where one group of `axis` sits on servers of `gpus_per_node` GPUs (ranks fill servers in order):
    'inside a server' or 'across N servers (k per server)'. A group's ranks are `stride` apart
    (`costmodel.network.placement.axis_stride`), so it spans stride * degree consecutive ranks."""
    degree = getattr(plan, axis)
    stride = axis_stride(plan, axis)
    span = stride * degree
    if span <= gpus_per_node and gpus_per_node % span == 0:
        return "inside a server"
    if stride >= gpus_per_node:
        return f"across {degree} servers"
    per_server = max(1, gpus_per_node // stride)
    return f"across {math.ceil(degree / per_server)} servers ({per_server} per server)"


def equivalence_note(kept: ParallelPlan, others: tuple[ParallelPlan, ...], *, gpus_per_node: int) -> str:
    """Why `others` (other placements of `kept`) change nothing: where each axis whose order differs
    sits on the servers in every order, and that the cost model gives them all the same figures."""
    plans = (kept, *others)
    moved = [a for a in kept.placement if getattr(kept, a) > 1
             and len({p.placement.index(a) for p in plans}) > 1]
    parts = []
    for a in moved:
        spans = list(dict.fromkeys(axis_span(p, a, gpus_per_node) for p in plans))
        parts.append(f"{a} {spans[0]}" + (" in every order" if len(spans) == 1 else f" or {' or '.join(spans[1:])}"))
    names = ", ".join("-".join(p.placement) for p in others)
    return (f"placement {names} gives the same step time, breakdown and memory as {'-'.join(kept.placement)}"
            + (f": {'; '.join(parts)}" if parts else ""))


@dataclass
class _Class:
    key: tuple
    est: StepEstimate
    members: list[tuple[tuple, StepEstimate]] = field(default_factory=list)


class EquivalenceFolder:
    """Sorted (key, estimate) pairs with equivalent plans folded into the one with the smallest key.

    `add` keeps `ranked` sorted by key (keys must be unique and sortable); with `enabled=False` it is a
    plain sorted list. The result does not depend on the order in which plans are added."""

    def __init__(self, *, gpus_per_node: int, enabled: bool = True) -> None:
        self.gpus_per_node = gpus_per_node
        self.enabled = enabled
        self.ranked: list[tuple[tuple, StepEstimate]] = []
        self._classes: dict[str, list[_Class]] = {}
        self._by_key: dict[tuple, _Class] = {}

    def __len__(self) -> int:
        return len(self.ranked)

    def add(self, key: tuple, est: StepEstimate) -> None:
        if not self.enabled:
            bisect.insort(self.ranked, (key, est), key=lambda kv: kv[0])
            return
        group = est.plan.model_dump_json(exclude={"placement"})
        for cls in self._classes.setdefault(group, []):
            if not same_figures(cls.est, est):
                continue
            if key < cls.key:  # the new plan comes first: it represents the class
                old = bisect.bisect_left(self.ranked, cls.key, key=lambda kv: kv[0])
                del self.ranked[old]
                del self._by_key[cls.key]
                cls.members.append((cls.key, cls.est))
                cls.key, cls.est = key, est
                self._by_key[key] = cls
                bisect.insort(self.ranked, (key, est), key=lambda kv: kv[0])
            else:
                cls.members.append((key, est))
            return
        cls = _Class(key, est)
        self._classes[group].append(cls)
        self._by_key[key] = cls
        bisect.insort(self.ranked, (key, est), key=lambda kv: kv[0])

    def equivalent(self, key: tuple) -> tuple[ParallelPlan, ...]:
        """The plans folded into the one ranked under `key`, in key order."""
        cls = self._by_key.get(key)
        return tuple(e.plan for _, e in sorted(cls.members, key=lambda kv: kv[0])) if cls else ()

    def ranked_plans(self, top_k: int | None = None) -> tuple[Any, ...]:
        """`RankedPlan`s of the first `top_k` classes, each with its equivalent plans and the reason."""
        from .result import RankedPlan

        out = []
        for rank, (key, est) in enumerate(self.ranked[:top_k]):
            same = self.equivalent(key)
            note = equivalence_note(est.plan, same, gpus_per_node=self.gpus_per_node) if same else ""
            out.append(RankedPlan(rank + 1, est.plan, est, equivalent=same, equivalent_note=note))
        return tuple(out)
