"""Validation of a cluster graph: every GPU linked, every link with bandwidth, every GPU reachable."""

from __future__ import annotations

import networkx as nx

__all__ = ["validate_topology"]


def validate_topology(graph: nx.Graph, *, name: str = "topology") -> None:
    """Raise ValueError naming the first problem: a node without `kind`, a link with zero or missing
    bandwidth or a negative latency, a GPU with no link, a GPU unreachable from GPU 0, or duplicate
    GPU indices."""
    gpus = []
    for node, d in graph.nodes(data=True):
        kind = d.get("kind")
        if kind not in ("gpu", "switch", "nic"):
            raise ValueError(f"{name}: node {node!r} has kind {kind!r}; use gpu, switch or nic")
        if kind == "gpu":
            gpus.append(node)
    if not gpus:
        raise ValueError(f"{name}: the graph has no GPU nodes")
    for u, v, d in graph.edges(data=True):
        bw = d.get("bw_bytes_per_s")
        if bw is None or not bw > 0:
            raise ValueError(f"{name}: link {u}-{v} has zero bandwidth ({bw}); give it a positive bw")
        if d.get("latency_s", 0.0) < 0:
            raise ValueError(f"{name}: link {u}-{v} has negative latency {d['latency_s']}")
    for gpu in gpus:
        if graph.degree(gpu) == 0:
            raise ValueError(f"{name}: GPU {gpu!r} has no link; connect it to its server's fabric")
    indices = sorted(graph.nodes[g].get("index", -1) for g in gpus)
    if indices != list(range(len(gpus))):
        raise ValueError(f"{name}: GPU indices must be 0..{len(gpus) - 1} without gaps or repeats")
    first = min(gpus, key=lambda g: graph.nodes[g]["index"])
    reach = nx.node_connected_component(graph, first)
    for gpu in sorted(gpus, key=lambda g: graph.nodes[g]["index"]):
        if gpu not in reach:
            raise ValueError(f"{name}: no path from GPU {first!r} to GPU {gpu!r}; add the missing link")
    for gpu in gpus:
        nic = graph.nodes[gpu].get("nic")
        if nic is not None and (nic not in graph or graph.nodes[nic].get("kind") != "nic"):
            raise ValueError(f"{name}: GPU {gpu!r} names nic {nic!r}, which is not a NIC node")
