"""Placement: a plan's mesh axes -> ranks -> GPUs of a cluster graph, and what each group's traffic
meets on the way: the links it uses, the bottleneck bandwidth, the hop latency and how many
concurrent flows share each link.

Ranks are laid out with `plan.placement[0]` fastest-varying (default TP innermost, so TP lands on the
NVSwitch island), and rank r runs on GPU r (servers filled in order), as torchrun and Megatron do.
All groups of one axis communicate at once (they run in lockstep), so a link carrying f flows gives
each flow 1/f of its bandwidth (max-min fair sharing of a bottleneck link; Bertsekas & Gallager,
Data Networks, 6.5). Different axes are assumed not to overlap in time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations
from math import prod

import numpy as np

from ..specs import AXES, ParallelPlan
from .route_table import RouteTable
from .topology import Topology

__all__ = ["PathStats", "GroupLink", "EXPERT_AXES", "expert_axis_key", "axis_groups", "price_flows", "walk_flows", "place_axis", "axis_stride",
           "candidate_placements"]

Flow = tuple[int, int]


@dataclass(frozen=True)
class PathStats:
    """What a set of concurrent flows sees: the slowest flow's bandwidth (after sharing), the largest
    hop latency, the most flows on one directed link, and the link kinds crossed."""

    bw_bytes_per_s: float
    latency_s: float
    max_sharing: int
    link_kinds: tuple[str, ...]


@dataclass(frozen=True)
class GroupLink:
    """Where one axis's groups sit and what their collectives run over. `bw_bytes_per_s` and
    `latency_s` are the flat ring's (bottleneck after sharing, worst hop); `intra`/`inter` are the
    two stages of a hierarchical collective (None when the group sits in one server or spreads
    unevenly); `edges` are group 0's ring hops, for inspection (a tuple, or on a preset topology a
    `route_names.Hops` that names them on first use and equals that tuple)."""

    size: int
    bw_bytes_per_s: float
    latency_s: float
    crosses_nodes: bool
    num_groups: int = 1
    ranks_per_server: int = 1
    num_servers: int = 1
    max_sharing: int = 1
    link_kinds: tuple[str, ...] = ()
    intra: PathStats | None = None
    inter: PathStats | None = None
    edges: Sequence[tuple[str, str]] = ()


EXPERT_AXES = ("ep", "edp")
"""Sub-axes of the data- and context-parallel ranks (cp innermost, then dp): 'ep' their innermost ep
ranks (an expert-parallel group), 'edp' the dp*cp/ep ranks holding the same experts, as Megatron-Core
(MoE parallel folding: EP over CP x DP) and torchtitan lay them out."""


def axis_groups(plan: ParallelPlan, axis: str) -> np.ndarray:
    """Ranks of every `axis` group, shape (num_groups, degree): rank = sum(coord[a] * stride[a]) with
    strides growing along `plan.placement`; 'ep' / 'edp' split each DP group (`EXPERT_AXES`)."""
    if axis in EXPERT_AXES:
        return _expert_groups(plan, axis)
    if axis not in AXES:
        raise ValueError(f"axis {axis!r} is not one of {AXES + EXPERT_AXES}")
    order = list(plan.placement)
    shape = [getattr(plan, a) for a in reversed(order)]  # outermost first (C order)
    ranks = np.arange(plan.world_size).reshape(shape)
    pos = len(order) - 1 - order.index(axis)
    return np.moveaxis(ranks, pos, -1).reshape(-1, getattr(plan, axis))


def _expert_groups(plan: ParallelPlan, axis: str) -> np.ndarray:
    """'ep' / 'edp' groups: each (cp, dp) group of ranks, cp fastest, cut into ep-rank chunks (ep) or
    taken one rank per chunk (edp)."""
    order = list(plan.placement)
    shape = [getattr(plan, a) for a in reversed(order)]
    ranks = np.arange(plan.world_size).reshape(shape)
    pos = [len(order) - 1 - order.index(a) for a in ("dp", "cp")]
    data = np.moveaxis(ranks, pos, [-2, -1]).reshape(-1, plan.dp * plan.cp // plan.ep, plan.ep)
    return data.reshape(-1, plan.ep) if axis == "ep" else np.swapaxes(data, 1, 2).reshape(-1, plan.edp)


def expert_axis_key(plan: ParallelPlan, axis: str) -> tuple:
    """What an expert axis's groups depend on (its placement-cache key): the strides and degrees of cp
    and dp, ep and the world size."""
    return ("expert", axis, axis_stride(plan, "cp"), plan.cp, axis_stride(plan, "dp"), plan.dp, plan.ep,
            plan.world_size)


def price_flows(topo: Topology, flows: list[Flow] | tuple[np.ndarray, np.ndarray]) -> PathStats:
    """Route each (src GPU, dst GPU) flow, count flows per directed link, and return the slowest
    flow's share min_e(bw_e / flows_e), the largest path latency and the link kinds used. `flows`
    is a list of pairs or a (src, dst) pair of arrays. Preset graphs are priced by their closed-form
    routes (`costmodel.network.route_table`, the same figures), others by `walk_flows`."""
    src, dst = _as_arrays(flows)
    table = _table(topo)
    if table is not None:
        return PathStats(*table.price(src, dst))
    return walk_flows(topo, list(zip(src.tolist(), dst.tolist(), strict=True)))


def _table(topo: Topology) -> RouteTable | None:
    """The topology's closed-form route table when it covers every GPU, else None (walk the graph)."""
    table = getattr(topo, "route_table", None)
    if table is not None and topo.num_gpus == table.num_servers * table.gpus_per_node:
        return table
    return None


def _route_edges(topo: Topology, src: np.ndarray, dst: np.ndarray) -> Sequence[tuple[str, str]]:
    """Named hops of flows src[i] -> dst[i], flow after flow: the table's (named on first use, see
    `route_names.Hops`), else the graph walk's."""
    table = _table(topo)
    if table is not None:
        return table.hops(src, dst)
    return tuple(e for a, b in zip(src.tolist(), dst.tolist(), strict=True) for e in topo.route(a, b))


def _by_server(groups: np.ndarray, servers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ranks and servers sorted by server, stably (a no-op where rows are already
    sorted, as they are when servers are numbered in GPU order)."""
    if groups.shape[1] < 2 or bool((servers[:, 1:] >= servers[:, :-1]).all()):
        return groups, servers
    order = np.argsort(servers, axis=1, kind="stable")
    return np.take_along_axis(groups, order, axis=1), np.take_along_axis(servers, order, axis=1)


def _as_arrays(flows: list[Flow] | tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(flows, tuple) and len(flows) == 2 and isinstance(flows[0], np.ndarray):
        return flows[0].ravel(), flows[1].ravel()
    pairs = np.asarray(flows, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def walk_flows(topo: Topology, flows: list[Flow]) -> PathStats:
    """`price_flows` by walking the graph route of every flow (any topology; the reference)."""
    routes = [topo.route(a, b) for a, b in flows]
    load: dict[tuple[str, str], int] = {}
    for route in routes:
        for e in route:
            load[e] = load.get(e, 0) + 1
    attrs = topo.link_attrs
    bw = min((attrs[e][0] / n for e, n in load.items()), default=float("inf"))
    kinds = {attrs[e][2] for e in load}
    lat = max((sum(attrs[e][1] for e in route) for route in set(routes)), default=0.0)
    return PathStats(bw, lat, max(load.values(), default=0), tuple(sorted(kinds)))


def _ring_flows(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each rank to the next in its group's row, the last back to the first (arrays src, dst)."""
    if groups.shape[1] == 1:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return groups.ravel(), np.roll(groups, -1, axis=1).ravel()


def _snake(groups: np.ndarray, servers: np.ndarray) -> np.ndarray:
    """Ring order as NCCL builds it: ranks grouped by server, every other server walked backwards, so
    server-to-server hops join GPUs with the same local index (same NIC rail)."""
    ranks, srv = _by_server(groups, servers)
    n = ranks.shape[1]
    new = np.ones(ranks.shape, dtype=bool)
    new[:, 1:] = srv[:, 1:] != srv[:, :-1]
    if n < 3 or new.all() or not new[:, 1:].any():  # one rank per server, or one server: no block reversed
        return ranks
    pos = np.broadcast_to(np.arange(n), ranks.shape)
    block = np.cumsum(new, axis=1) - 1  # server block of each position (0, 1, ...)
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    end_new = np.ones(ranks.shape, dtype=bool)  # last position of its block
    end_new[:, :-1] = new[:, 1:]
    end = np.minimum.accumulate(np.where(end_new, pos, n)[:, ::-1], axis=1)[:, ::-1]
    src = np.where(block % 2 == 1, start + end - pos, pos)  # odd blocks walked backwards
    return np.take_along_axis(ranks, src, axis=1)


def place_axis(topo: Topology, plan: ParallelPlan, axis: str) -> GroupLink:
    """The GroupLink of `axis` for `plan` on `topo`. For 'pp' the flows are stage i -> i+1."""
    if plan.world_size > topo.num_gpus:
        raise ValueError(f"the plan needs {plan.world_size} GPUs but topology {topo.name!r} has "
                         f"{topo.num_gpus}; lower a degree or use a bigger cluster")
    groups = axis_groups(plan, axis)
    size = groups.shape[1]
    if size == 1:
        return GroupLink(size, float("inf"), 0.0, False, num_groups=groups.shape[0], ranks_per_server=1)
    servers = topo.gpu_server[groups]
    per_server = np.unique(servers[0], return_counts=True)[1]
    crosses = len(per_server) > 1
    if axis == "pp":
        flows = (groups[:, :-1].ravel(), groups[:, 1:].ravel())
    else:
        flows = _ring_flows(_snake(groups, servers))
    flat = price_flows(topo, flows)
    first = size - 1 if axis == "pp" else size  # group 0's flows come first
    edges = _route_edges(topo, flows[0][:first], flows[1][:first])
    intra = inter = None
    k = int(per_server[0])
    if crosses and axis != "pp" and k > 1 and np.all(per_server == k):
        # hierarchical: ranks of a group grouped by server (servers appear in rank order)
        by_server = _by_server(groups, servers)[0].reshape(groups.shape[0], -1, k)
        intra = price_flows(topo, _ring_flows(by_server.reshape(-1, k)))
        inter = price_flows(topo, _ring_flows(np.swapaxes(by_server, 1, 2).reshape(-1, by_server.shape[1])))
    return GroupLink(size, flat.bw_bytes_per_s, flat.latency_s, crosses, num_groups=groups.shape[0],
                     ranks_per_server=int(per_server.max()), num_servers=len(per_server),
                     max_sharing=flat.max_sharing, link_kinds=flat.link_kinds, intra=intra, inter=inter,
                     edges=edges)


def axis_stride(plan: ParallelPlan, axis: str) -> int:
    """Rank distance between neighbours of an `axis` group: the product of the degrees of the axes
    placed inside it. The groups of an axis, as a set of rank rows, depend only on (stride, degree,
    world size), so their GroupLink does too (`CommModel` caches it under that key; expert axes under
    `expert_axis_key`)."""
    order = plan.placement
    return prod(getattr(plan, a) for a in order[:order.index(axis)])


def candidate_placements(plan: ParallelPlan) -> list[tuple[str, ...]]:
    """Distinct placements worth trying for `plan`: orders of the axes with degree > 1 (axes of degree
    1 do not change the layout), TP-innermost first."""
    active = [a for a in AXES if getattr(plan, a) > 1]
    idle = tuple(a for a in AXES if getattr(plan, a) == 1)
    out = [tuple(p) + idle for p in permutations(active)]
    return out or [AXES]
