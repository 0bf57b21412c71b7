"""Interconnect what-ifs: a cluster with a faster/slower network or server fabric, an oversubscribed
leaf/spine, or a user's own topology graph (`paraplan estimate --inter-node-bw 400Gbps`,
`--oversubscription 2:1`, `--topology graph.yaml`)."""

from __future__ import annotations

from pathlib import Path

from ..specs import ClusterSpec, LinkSpec
from .topology import Topology, load_topology
from .units import parse_bandwidth

__all__ = ["parse_oversubscription", "apply_interconnect", "cluster_for_topology"]


def parse_oversubscription(text: str | float, *, what: str = "--oversubscription") -> float:
    """A ratio >= 1 from '2', '2.0' or '2:1'."""
    s = str(text).strip()
    try:
        if ":" in s:
            num, den = s.split(":", 1)
            value = float(num) / float(den)
        else:
            value = float(s)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{what}: cannot parse {text!r}; use a ratio like 2 or 2:1") from None
    if not value >= 1.0:
        raise ValueError(f"{what}: {text!r} must be >= 1 (1 = non-blocking, 2 = 2:1 oversubscribed)")
    return value


def apply_interconnect(cluster: ClusterSpec, *, inter_node_bw: str | float | None = None,
                       intra_node_bw: str | float | None = None,
                       oversubscription: str | float | None = None) -> ClusterSpec:
    """`cluster` with its NIC bandwidth, server-fabric bandwidth (per GPU) or network oversubscription
    replaced; latencies are kept. Bad values raise ValueError naming the flag."""
    update: dict[str, object] = {}
    if inter_node_bw is not None:
        bw = parse_bandwidth(inter_node_bw, what="--inter-node-bw")
        old = cluster.inter_node_link
        update["inter_node_link"] = LinkSpec(name=f"{old.name}@{inter_node_bw}", bw_bytes_per_s=bw,
                                             latency_s=old.latency_s)
    if intra_node_bw is not None:
        bw = parse_bandwidth(intra_node_bw, what="--intra-node-bw")
        old = cluster.intra_node_link
        update["intra_node_link"] = LinkSpec(name=f"{old.name}@{intra_node_bw}", bw_bytes_per_s=bw,
                                             latency_s=old.latency_s)
    if oversubscription is not None:
        update["oversubscription"] = parse_oversubscription(oversubscription)
    if not update:
        return cluster
    return ClusterSpec.model_validate({**cluster.model_dump(), **{k: (v.model_dump() if isinstance(v, LinkSpec) else v)
                                                                  for k, v in update.items()}})


def cluster_for_topology(cluster: ClusterSpec, topology: Topology | str | Path) -> tuple[ClusterSpec, Topology]:
    """Load `topology` (a file path or a Topology) and resize `cluster` to it: num_nodes = servers,
    gpus_per_node = GPUs per server (must be the same on every server)."""
    topo = topology if isinstance(topology, Topology) else load_topology(topology)
    counts = {s: 0 for s in topo.servers}
    for i in range(topo.num_gpus):
        counts[topo.server_of(i)] += 1
    sizes = set(counts.values())
    if len(sizes) != 1:
        raise ValueError(f"--topology: servers hold different GPU counts {counts}; the cost model needs "
                         "the same number of GPUs on every server")
    gpn = sizes.pop()
    resized = ClusterSpec.model_validate({**cluster.model_dump(), "name": topo.name,
                                          "num_nodes": len(counts), "gpus_per_node": gpn})
    return resized, topo
