"""Communication cost of a plan's collectives, priced on the cluster graph.

`build_comm_model(cluster, plan, topology=None, calibration=None) -> CommModel` places the plan's
mesh axes on the topology (`costmodel.network.placement`), and `CommModel.time_s(axis, op, nbytes)` prices
one collective of a full (unsharded) `nbytes` buffer on that axis's groups with the cheapest
algorithm (`costmodel.network.collectives`), with links shared among the axis's concurrent groups.

With a `CalibrationProfile` measured on the same kind of device as the cluster's GPU (`profile.gpu
== cluster.gpu.name`), groups inside one server use the measured curve for their (op, group size)
and otherwise a server link fitted to the measured all-reduce curves (alpha-beta least squares);
traffic that leaves the server is still priced on the topology's network links.

The flat formulas below are kept from the first version (vectorised over n as well) for callers that
price many degrees at once."""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..calibration.profile_spec import CalibrationProfile
from ..specs import AXES, ClusterSpec, LinkSpec, ParallelPlan
from .collectives import algorithm_times_s, collective_time_s
from .placement import EXPERT_AXES, GroupLink, axis_stride, expert_axis_key, place_axis
from .topology import Topology, build_topology

__all__ = [
    "Axis", "Collective", "GroupLink", "CommModel", "build_comm_model", "group_link",
    "all_reduce_time_s", "reduce_scatter_time_s", "all_gather_time_s", "all_to_all_time_s",
    "send_recv_time_s",
]

Axis = Literal["tp", "cp", "dp", "pp", "ep", "edp"]
Collective = Literal["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "send_recv"]
ArrayLike = float | np.ndarray


def all_reduce_time_s(nbytes: ArrayLike, n: ArrayLike, bw_bytes_per_s: ArrayLike, latency_s: ArrayLike) -> ArrayLike:
    """Ring all-reduce: 2(n-1)/n * bytes / bw + 2(n-1) * alpha; zero for n == 1 (Thakur et al. 2005)."""
    n = np.asarray(n, dtype=float)
    return np.where(n > 1, 2 * (n - 1) / n * nbytes / bw_bytes_per_s + 2 * (n - 1) * latency_s, 0.0)[()]


def reduce_scatter_time_s(nbytes: ArrayLike, n: ArrayLike, bw_bytes_per_s: ArrayLike, latency_s: ArrayLike) -> ArrayLike:
    """Ring reduce-scatter of an `nbytes` buffer: (n-1)/n * bytes / bw + (n-1) * alpha."""
    n = np.asarray(n, dtype=float)
    return np.where(n > 1, (n - 1) / n * nbytes / bw_bytes_per_s + (n - 1) * latency_s, 0.0)[()]


def all_gather_time_s(nbytes: ArrayLike, n: ArrayLike, bw_bytes_per_s: ArrayLike, latency_s: ArrayLike) -> ArrayLike:
    """Ring all-gather producing an `nbytes` buffer: same cost as reduce-scatter."""
    return reduce_scatter_time_s(nbytes, n, bw_bytes_per_s, latency_s)


def all_to_all_time_s(nbytes: ArrayLike, n: ArrayLike, bw_bytes_per_s: ArrayLike, latency_s: ArrayLike) -> ArrayLike:
    """Pairwise all-to-all of an `nbytes` buffer per GPU: (n-1)/n * bytes / bw + (n-1) * alpha."""
    return reduce_scatter_time_s(nbytes, n, bw_bytes_per_s, latency_s)


def send_recv_time_s(nbytes: ArrayLike, bw_bytes_per_s: ArrayLike, latency_s: ArrayLike) -> ArrayLike:
    """Point-to-point transfer: alpha + bytes / bw."""
    return latency_s + np.asarray(nbytes, dtype=float) / bw_bytes_per_s


def _calibrated_cluster(cluster: ClusterSpec, calibration: CalibrationProfile) -> ClusterSpec:
    """`cluster` with its server link replaced by the alpha-beta fit of the measured all-reduces."""
    fit = calibration.fit_alpha_beta("all_reduce")
    if fit is None:
        return cluster
    bw, lat = fit
    link = LinkSpec(name=f"calibrated-{cluster.intra_node_link.name}", bw_bytes_per_s=bw, latency_s=lat)
    return cluster.model_copy(update={"intra_node_link": link})


def _curve_size(op: str, group_size: int) -> int:
    """The measured curve that prices `op`: send/recv is always between two ranks."""
    return 2 if op == "send_recv" else group_size


class CommModel:
    """Prices collectives on each mesh axis of a plan placed on a cluster graph. `links[axis]` is the
    axis's GroupLink (links used, bottleneck bandwidth after sharing, hop latency); besides the plan's
    axes, 'ep' (expert-parallel groups) and 'edp' (expert data parallel) split dp."""

    def __init__(self, cluster: ClusterSpec, plan: ParallelPlan, *, topology: Topology | None = None,
                 calibration: CalibrationProfile | None = None) -> None:
        self.cluster = cluster
        self.plan = plan
        applies = calibration is not None and calibration.gpu == cluster.gpu.name
        self.calibration = calibration if applies else None
        if topology is None:
            base = _calibrated_cluster(cluster, calibration) if applies else cluster
            topology = build_topology(base)
        self.topology = topology
        cache = topology.placement_cache
        key = (plan.tp, plan.cp, plan.dp, plan.pp, plan.ep, plan.placement)
        if key not in cache:
            links = {}
            for a in AXES + EXPERT_AXES:  # groups depend only on (stride, degree, world): price each shape once
                if a in EXPERT_AXES:
                    shape = expert_axis_key(plan, a) if plan.ep > 1 or a == "ep" else (
                        "axis", False, axis_stride(plan, "dp"), plan.dp, plan.world_size)
                else:
                    shape = ("axis", a == "pp", axis_stride(plan, a), getattr(plan, a), plan.world_size)
                if shape not in cache:
                    cache[shape] = place_axis(topology, plan, a)
                links[a] = cache[shape]
            cache[key] = links
        self.links: dict[str, GroupLink] = cache[key]

    def time_s(self, axis: Axis, op: Collective, nbytes: ArrayLike) -> ArrayLike:
        """Seconds for one `op` of an `nbytes` buffer (full, unsharded size) on the `axis` group."""
        if axis not in self.links:
            raise ValueError(f"axis {axis!r} is not one of {AXES + EXPERT_AXES}")
        g = self.links[axis]
        if g.size <= 1:
            return np.zeros_like(np.asarray(nbytes, dtype=float))[()]
        if self.calibration is not None and not g.crosses_nodes:
            measured = self.calibration.collective_times_s(op, nbytes, _curve_size(op, g.size))
            if measured is not None:
                return measured[()]
        return collective_time_s(g, op, nbytes)

    def algorithm(self, axis: Axis, op: Collective, nbytes: float) -> str:
        """Name of the algorithm `time_s` picks ('ring', 'tree', 'hierarchical', 'pairwise', 'p2p',
        'measured' or 'none')."""
        g = self.links[axis]
        if g.size <= 1:
            return "none"
        if (self.calibration is not None and not g.crosses_nodes
                and self.calibration.collective_curve(op, _curve_size(op, g.size)) is not None):
            return "measured"
        times = algorithm_times_s(g, op, nbytes)
        return min(times, key=lambda k: float(times[k]))


def group_link(cluster: ClusterSpec, plan: ParallelPlan, axis: Axis) -> GroupLink:
    """Where the `axis` group's ranks sit on the cluster's graph and what their traffic meets."""
    return build_comm_model(cluster, plan).links[axis]


def build_comm_model(cluster: ClusterSpec, plan: ParallelPlan, *, topology: Topology | None = None,
                     calibration: CalibrationProfile | None = None) -> CommModel:
    """The communication model `estimate` uses for `plan` on `cluster` (graph built from the cluster
    unless `topology` is given; placement cached per (degrees, placement) on the graph)."""
    return CommModel(cluster, plan, topology=topology, calibration=calibration)
