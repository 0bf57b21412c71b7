"""Collective algorithms priced with the alpha-beta model on placed paths, and NCCL-style choice of the
cheapest one.

Formulas (n ranks, B bytes of full buffer, bw the bottleneck bandwidth after link sharing, alpha the
worst hop latency):
- ring all-reduce 2(n-1)/n * B/bw + 2(n-1) alpha; ring reduce-scatter / all-gather (n-1)/n * B/bw +
  (n-1) alpha (Thakur, Rabenseifner & Gropp 2005, "Optimization of Collective Communication
  Operations in MPICH", sec. 4; Patarasuk & Yuan 2009);
- double binary tree all-reduce 2 B/bw + 2 ceil(log2 n) alpha: each rank sends and receives B per
  phase over the two trees, pipelined (Sanders, Speck & Traeff 2009; NCCL 2.4 release notes);
- hierarchical (2D) all-reduce: reduce-scatter inside each server (k ranks), all-reduce of B/k across
  the m servers by k parallel sub-rings, all-gather inside (NCCL's CollNet/2D idea; Jia et al. 2018,
  "Highly Scalable Deep Learning Training System with Mixed-Precision", sec. 3.3);
- pairwise all-to-all (n-1) alpha + max(intra, inter share) of (n-1)/n * B; send/recv alpha + B/bw."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .placement import GroupLink, PathStats

__all__ = [
    "Collective", "COLLECTIVES", "ring_terms", "tree_terms", "ring_all_reduce_time_s", "ring_reduce_scatter_time_s",
    "tree_all_reduce_time_s", "all_to_all_time_s", "send_recv_time_s", "algorithm_times_s",
    "collective_time_s",
]

Collective = Literal["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "send_recv"]
COLLECTIVES: tuple[str, ...] = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "send_recv")
ArrayLike = float | np.ndarray


def ring_terms(n: int, latency_s: float, *, all_reduce: bool) -> tuple[float, float]:
    """(coefficient of B/bw, latency term) of a ring on n ranks: all-reduce 2(n-1)/n and 2(n-1) alpha,
    reduce-scatter / all-gather (n-1)/n and (n-1) alpha; (0, 0) for n <= 1. The one place these
    constants live (`costmodel.network.collectives_rows` prices many groups with them)."""
    if n <= 1:
        return 0.0, 0.0
    if all_reduce:
        return 2 * (n - 1) / n, 2 * (n - 1) * latency_s
    return (n - 1) / n, (n - 1) * latency_s


def tree_terms(n: int, latency_s: float) -> tuple[float, float]:
    """(coefficient of B/bw, latency term) of the double binary tree all-reduce: 2 and
    2 ceil(log2 n) alpha; (0, 0) for n <= 1."""
    if n <= 1:
        return 0.0, 0.0
    return 2.0, 2 * int(np.ceil(np.log2(n))) * latency_s


def _priced(nbytes: ArrayLike, n: int, terms: tuple[float, float], bw_bytes_per_s: float) -> ArrayLike:
    if n <= 1:
        return np.zeros_like(np.asarray(nbytes, dtype=float))[()]
    coef, lat = terms
    return coef * np.asarray(nbytes, dtype=float) / bw_bytes_per_s + lat


def ring_all_reduce_time_s(nbytes: ArrayLike, n: int, bw_bytes_per_s: float, latency_s: float) -> ArrayLike:
    """Ring all-reduce: 2(n-1)/n * B/bw + 2(n-1) * alpha; zero for n == 1."""
    return _priced(nbytes, n, ring_terms(n, latency_s, all_reduce=True), bw_bytes_per_s)


def ring_reduce_scatter_time_s(nbytes: ArrayLike, n: int, bw_bytes_per_s: float, latency_s: float) -> ArrayLike:
    """Ring reduce-scatter (or all-gather) of a B-byte full buffer: (n-1)/n * B/bw + (n-1) * alpha."""
    return _priced(nbytes, n, ring_terms(n, latency_s, all_reduce=False), bw_bytes_per_s)


def tree_all_reduce_time_s(nbytes: ArrayLike, n: int, bw_bytes_per_s: float, latency_s: float) -> ArrayLike:
    """Double binary tree all-reduce: 2 B/bw + 2 ceil(log2 n) * alpha."""
    return _priced(nbytes, n, tree_terms(n, latency_s), bw_bytes_per_s)


def all_to_all_time_s(nbytes: ArrayLike, g: GroupLink) -> ArrayLike:
    """Pairwise exchange of a B-byte buffer per rank: (n-1) alpha plus the slower of the intra-server
    part (k-1)/n * B and the off-server part (n-k)/n * B, each over its own bottleneck share."""
    b = np.asarray(nbytes, dtype=float)
    n, k = g.size, g.ranks_per_server
    if n <= 1:
        return np.zeros_like(b)[()]
    if not g.crosses_nodes:
        return (n - 1) / n * b / g.bw_bytes_per_s + (n - 1) * g.latency_s
    intra_bw = g.intra.bw_bytes_per_s if g.intra else g.bw_bytes_per_s
    inter_bw = g.inter.bw_bytes_per_s if g.inter else g.bw_bytes_per_s
    return np.maximum((k - 1) / n * b / intra_bw, (n - k) / n * b / inter_bw) + (n - 1) * g.latency_s


def send_recv_time_s(nbytes: ArrayLike, bw_bytes_per_s: float, latency_s: float) -> ArrayLike:
    """Point-to-point transfer: alpha + B/bw."""
    return latency_s + np.asarray(nbytes, dtype=float) / bw_bytes_per_s


def _hier(op: str, b: np.ndarray, g: GroupLink, intra: PathStats, inter: PathStats) -> ArrayLike:
    k, m = g.ranks_per_server, g.num_servers
    rs_in = ring_reduce_scatter_time_s(b, k, intra.bw_bytes_per_s, intra.latency_s)
    if op == "all_reduce":
        across = np.minimum(ring_all_reduce_time_s(b / k, m, inter.bw_bytes_per_s, inter.latency_s),
                            tree_all_reduce_time_s(b / k, m, inter.bw_bytes_per_s, inter.latency_s))
        return 2 * rs_in + across
    return rs_in + ring_reduce_scatter_time_s(b / k, m, inter.bw_bytes_per_s, inter.latency_s)


def algorithm_times_s(g: GroupLink, op: str, nbytes: ArrayLike) -> dict[str, ArrayLike]:
    """Seconds of each applicable algorithm for `op` on group `g` ('ring', 'tree', 'hierarchical',
    'pairwise', 'p2p')."""
    b = np.asarray(nbytes, dtype=float)
    if op not in COLLECTIVES:
        raise ValueError(f"op {op!r} is not one of {COLLECTIVES}")
    if g.size <= 1:
        return {"none": np.zeros_like(b)[()]}
    bw, lat = g.bw_bytes_per_s, g.latency_s
    if op == "send_recv":
        return {"p2p": send_recv_time_s(b, bw, lat)}
    if op == "all_to_all":
        return {"pairwise": all_to_all_time_s(b, g)}
    out: dict[str, ArrayLike] = {}
    if op == "all_reduce":
        out["ring"] = ring_all_reduce_time_s(b, g.size, bw, lat)
        out["tree"] = tree_all_reduce_time_s(b, g.size, bw, lat)
    else:
        out["ring"] = ring_reduce_scatter_time_s(b, g.size, bw, lat)
    if g.intra is not None and g.inter is not None:
        out["hierarchical"] = _hier(op, b, g, g.intra, g.inter)
    return out


def collective_time_s(g: GroupLink, op: str, nbytes: ArrayLike) -> ArrayLike:
    """The cheapest algorithm's time, as NCCL's tuner picks per message size."""
    times = list(algorithm_times_s(g, op, nbytes).values())
    best = times[0]
    for t in times[1:]:
        best = np.minimum(best, t)
    return best[()] if isinstance(best, np.ndarray) else best
