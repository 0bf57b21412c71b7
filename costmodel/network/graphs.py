"""Helpers on cluster graphs (networkx) for `costmodel.network.topology`'s graph walk: the routing weight,
order-preserving subgraphs (deterministic tie-breaking) and server signatures (servers built alike
share their computed in-server paths)."""

from __future__ import annotations

from typing import Any

import networkx as nx

__all__ = ["routing_weight", "ordered_subgraph", "server_signatures"]


def server_signatures(graph: nx.Graph, members: dict[str, list[str]]) -> dict[str, int]:
    """A number per server whose nodes are all named '<server>/<local>': equal numbers mean the same
    local nodes, kinds and internal links, so routes computed in one hold in the other."""
    sigs: dict[Any, int] = {}
    out: dict[str, int] = {}
    for server, nodes in members.items():
        prefix = f"{server}/"
        if not all(n.startswith(prefix) for n in nodes):
            continue
        cut = len(prefix)
        inside = set(nodes)
        local_nodes = frozenset((n[cut:], graph.nodes[n]["kind"]) for n in nodes)
        local_edges = frozenset((*sorted((u[cut:], v[cut:])), d["bw_bytes_per_s"], d["latency_s"], d["kind"])
                                for n in nodes for u, v, d in graph.edges(n, data=True) if v in inside)
        out[server] = sigs.setdefault((local_nodes, local_edges), len(sigs))
    return out


def ordered_subgraph(graph: nx.Graph, nodes: list[str]) -> nx.Graph:
    """The subgraph on `nodes`, nodes in the given order (callers pass them in `graph`'s order) and
    each node's links in `graph`'s order. (`graph.subgraph(...).copy()` may iterate a set of node
    names, whose order changes with PYTHONHASHSEED; shortest paths then broke ties differently from
    run to run, e.g. between the two-hop NVLink paths of a cube-mesh server.)"""
    keep = set(nodes)
    sub = nx.Graph()
    sub.add_nodes_from((n, graph.nodes[n]) for n in nodes)
    sub.add_edges_from((u, v, d) for u in sub for v, d in graph.adj[u].items() if v in keep)
    return sub


def routing_weight(u: str, v: str, d: dict[str, Any]) -> float:
    """Routing cost: prefer wide links, then few hops (time to move 1 MB plus the hop's latency)."""
    return 1e6 / d["bw_bytes_per_s"] + d["latency_s"]
