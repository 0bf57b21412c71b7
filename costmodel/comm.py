"""Communication cost of a plan's collectives (first version: alpha-beta over flat links).

The interface is `build_comm_model(cluster, plan) -> CommModel` and `CommModel.time_s(axis, op,
nbytes)`; the topology-aware model replaces the internals behind the same interface.

Formulas: ring collectives (Thakur et al. 2005; NCCL's performance notes): all-reduce moves
2(n-1)/n of the buffer over each GPU's link, reduce-scatter and all-gather (n-1)/n of the full
(unsharded) buffer; each of the 2(n-1) or (n-1) steps pays the link latency (alpha)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .specs import ClusterSpec, ParallelPlan

__all__ = [
    "Axis", "Collective", "GroupLink", "CommModel", "build_comm_model", "group_link",
    "all_reduce_time_s", "reduce_scatter_time_s", "all_gather_time_s", "all_to_all_time_s",
    "send_recv_time_s",
]

Axis = Literal["tp", "cp", "dp", "pp"]
Collective = Literal["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "send_recv"]
ArrayLike = float | np.ndarray


def all_reduce_time_s(nbytes: ArrayLike, n: ArrayLike, bw_bytes_per_s: ArrayLike, latency_s: ArrayLike) -> ArrayLike:
    """Ring all-reduce: 2(n-1)/n * bytes / bw + 2(n-1) * alpha; zero for n == 1."""
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


@dataclass(frozen=True)
class GroupLink:
    """The link one communication group of `size` ranks runs over."""

    size: int
    bw_bytes_per_s: float
    latency_s: float
    crosses_nodes: bool


def _axis_stride(plan: ParallelPlan, axis: Axis) -> int:
    """Rank distance between neighbours on `axis`: product of the degrees of axes placed inside it."""
    stride = 1
    for inner in plan.placement:
        if inner == axis:
            return stride
        stride *= getattr(plan, inner)
    raise AssertionError(f"axis {axis} missing from placement {plan.placement}")


def group_link(cluster: ClusterSpec, plan: ParallelPlan, axis: Axis) -> GroupLink:
    """Where the `axis` group's ranks sit (ranks are laid out node by node) and the link it uses.

    A group whose span stride*size fits in a node runs over the intra-node link; otherwise its
    traffic crosses NICs, each GPU getting its share of the node's NIC bandwidth."""
    size = getattr(plan, axis)
    stride = _axis_stride(plan, axis)
    span = stride * (size - 1) + 1 if axis != "pp" else stride + 1  # pp talks to its next stage only
    crosses = size > 1 and span > cluster.gpus_per_node
    if not crosses:
        link = cluster.intra_node_link
        return GroupLink(size, link.bw_bytes_per_s, link.latency_s, False)
    nic = cluster.inter_node_link
    bw = min(cluster.intra_node_link.bw_bytes_per_s, cluster.inter_node_bw_per_gpu_bytes_per_s)
    return GroupLink(size, bw, nic.latency_s, True)


class CommModel:
    """Prices collectives on each mesh axis of a plan placed on a cluster."""

    def __init__(self, cluster: ClusterSpec, plan: ParallelPlan) -> None:
        self.cluster = cluster
        self.plan = plan
        self.links: dict[str, GroupLink] = {a: group_link(cluster, plan, a) for a in ("tp", "cp", "dp", "pp")}

    def time_s(self, axis: Axis, op: Collective, nbytes: ArrayLike) -> ArrayLike:
        """Seconds for one `op` of an `nbytes` buffer (full, unsharded size) on the `axis` group."""
        g = self.links[axis]
        if op == "send_recv":
            return send_recv_time_s(nbytes, g.bw_bytes_per_s, g.latency_s) if g.size > 1 else 0.0
        fn = {"all_reduce": all_reduce_time_s, "reduce_scatter": reduce_scatter_time_s,
              "all_gather": all_gather_time_s, "all_to_all": all_to_all_time_s}[op]
        return fn(nbytes, g.size, g.bw_bytes_per_s, g.latency_s)


def build_comm_model(cluster: ClusterSpec, plan: ParallelPlan) -> CommModel:
    """The communication model `estimate` uses for `plan` on `cluster`."""
    return CommModel(cluster, plan)
