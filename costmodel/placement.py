"""Placement: a plan's mesh axes -> ranks -> GPUs of a cluster graph, and what each group's traffic
meets on the way: the links it uses, the bottleneck bandwidth, the hop latency and how many
concurrent flows share each link.

Ranks are laid out with `plan.placement[0]` fastest-varying (default TP innermost, so TP lands on the
NVSwitch island), and rank r runs on GPU r (servers filled in order), as torchrun and Megatron do.
All groups of one axis communicate at once (they run in lockstep), so a link carrying f flows gives
each flow 1/f of its bandwidth (max-min fair sharing of a bottleneck link; Bertsekas & Gallager,
Data Networks, 6.5). Different axes are assumed not to overlap in time."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from .specs import AXES, ParallelPlan
from .topology import Topology

__all__ = ["PathStats", "GroupLink", "axis_groups", "price_flows", "place_axis", "candidate_placements"]

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
    unevenly); `edges` are group 0's ring hops, for inspection."""

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
    edges: tuple[tuple[str, str], ...] = ()


def axis_groups(plan: ParallelPlan, axis: str) -> np.ndarray:
    """Ranks of every `axis` group, shape (num_groups, degree): rank = sum(coord[a] * stride[a]) with
    strides growing along `plan.placement`."""
    if axis not in AXES:
        raise ValueError(f"axis {axis!r} is not one of {AXES}")
    order = list(plan.placement)
    shape = [getattr(plan, a) for a in reversed(order)]  # outermost first (C order)
    ranks = np.arange(plan.world_size).reshape(shape)
    pos = len(order) - 1 - order.index(axis)
    return np.moveaxis(ranks, pos, -1).reshape(-1, getattr(plan, axis))


def price_flows(topo: Topology, flows: list[Flow]) -> PathStats:
    """Route each (src GPU, dst GPU) flow, count flows per directed link, and return the slowest
    flow's share min_e(bw_e / flows_e), the largest path latency and the link kinds used."""
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


def _ring_flows(groups: np.ndarray) -> list[Flow]:
    n = groups.shape[1]
    nxt = np.roll(groups, -1, axis=1)
    return [] if n == 1 else list(zip(groups.ravel().tolist(), nxt.ravel().tolist(), strict=True))


def _snake(groups: np.ndarray, servers: np.ndarray) -> np.ndarray:
    """Ring order as NCCL builds it: ranks grouped by server, every other server walked backwards, so
    server-to-server hops join GPUs with the same local index (same NIC rail)."""
    order = np.argsort(servers, axis=1, kind="stable")
    ranks, srv = np.take_along_axis(groups, order, axis=1), np.take_along_axis(servers, order, axis=1)
    out = ranks.copy()
    for g in range(ranks.shape[0]):
        uniq, start = np.unique(srv[g], return_index=True)
        if len(uniq) < 2:
            continue
        bounds = [*sorted(start.tolist()), ranks.shape[1]]
        for i in range(1, len(bounds) - 1, 2):
            out[g, bounds[i]:bounds[i + 1]] = ranks[g, bounds[i]:bounds[i + 1]][::-1]
    return out


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
        flows = list(zip(groups[:, :-1].ravel().tolist(), groups[:, 1:].ravel().tolist(), strict=True))
    else:
        flows = _ring_flows(_snake(groups, servers))
    flat = price_flows(topo, flows)
    edges = tuple(e for a, b in flows[: (size - 1 if axis == "pp" else size)] for e in topo.route(a, b))
    intra = inter = None
    k = int(per_server[0])
    if crosses and axis != "pp" and k > 1 and np.all(per_server == k):
        # hierarchical: ranks of a group grouped by server (servers appear in rank order)
        order = np.argsort(servers, axis=1, kind="stable")
        by_server = np.take_along_axis(groups, order, axis=1).reshape(groups.shape[0], -1, k)
        intra = price_flows(topo, _ring_flows(by_server.reshape(-1, k)))
        inter = price_flows(topo, _ring_flows(np.swapaxes(by_server, 1, 2).reshape(-1, by_server.shape[1])))
    return GroupLink(size, flat.bw_bytes_per_s, flat.latency_s, crosses, num_groups=groups.shape[0],
                     ranks_per_server=int(per_server.max()), num_servers=len(per_server),
                     max_sharing=flat.max_sharing, link_kinds=flat.link_kinds, intra=intra, inter=inter,
                     edges=edges)


def candidate_placements(plan: ParallelPlan) -> list[tuple[str, ...]]:
    """Distinct placements worth trying for `plan`: orders of the axes with degree > 1 (axes of degree
    1 do not change the layout), TP-innermost first."""
    active = [a for a in AXES if getattr(plan, a) > 1]
    idle = tuple(a for a in AXES if getattr(plan, a) == 1)
    out = [tuple(p) + idle for p in permutations(active)]
    return out or [AXES]
