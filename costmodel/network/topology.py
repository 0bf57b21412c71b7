"""Cluster graphs (networkx): GPUs, the fabric inside a server, NICs and the network between servers.

Nodes carry `kind` ('gpu', 'switch', 'nic') and `server` (None for network switches); GPU nodes carry
`index` (global GPU number; rank r of a plan runs on GPU r) and `nic` (the NIC its inter-server
traffic leaves through, as NCCL binds each GPU to its nearest NIC). Edges are full duplex and carry
`bw_bytes_per_s` (per direction), `latency_s` and `kind`.

Preset graphs (`costmodel.network.presets`) are built only when something reads `Topology.graph`:
their routes are closed-form (`costmodel.network.route_table`), with the same figures as a graph walk."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from ..specs import ClusterSpec
from ..specs._base import read_yaml, shown_path
from ..specs.limits import shown
from .graphs import ordered_subgraph as _ordered_subgraph
from .graphs import routing_weight as _weight
from .graphs import server_signatures as _signatures
from .presets import preset_graph
from .route_table import RouteTable
from .topology_check import validate_topology
from .topology_names import PresetGpus, PresetServers, ServerOf
from .units import parse_bandwidth, parse_latency

__all__ = ["Topology", "build_topology", "load_topology", "validate_topology", "MAX_FILE_NODES"]

MAX_FILE_NODES = 1 << 16
"""Nodes (GPUs, switches, NICs) a topology file may hold: its routes are walked on the graph."""

Edge = tuple[str, str]


class Topology:
    """A validated cluster graph with cached GPU-to-GPU routes.

    A preset's topology (`build_topology`) carries its closed-form `route_table` and builds the
    networkx graph only when something reads `graph` (a topology view, a user-level walk): routes
    and placements are priced from the table, with the same figures."""

    def __init__(self, graph: nx.Graph, *, name: str = "custom") -> None:
        validate_topology(graph, name=name)
        gpus = sorted((n for n, d in graph.nodes(data=True) if d["kind"] == "gpu"),
                      key=lambda n: graph.nodes[n]["index"])
        servers = tuple(dict.fromkeys(graph.nodes[g]["server"] for g in gpus))
        sidx = {s: i for i, s in enumerate(servers)}
        gpu_server = np.array([sidx[graph.nodes[g]["server"]] for g in gpus], dtype=np.int64)
        self._setup(name, tuple(gpus), servers, gpu_server)
        self._graph: nx.Graph | None = graph
        self._make_graph: Callable[[], nx.Graph] | None = None
        self._index_graph(graph, uniform=False)

    @classmethod
    def _lazy(cls, make_graph: Callable[[], nx.Graph], *, name: str, gpus: Sequence[str],
              servers: Sequence[str], gpu_server: Any, route_table: RouteTable | None) -> Topology:
        """A preset topology whose graph `make_graph()` builds on first use (identical servers)."""
        topo = cls.__new__(cls)
        topo._setup(name, gpus, servers, gpu_server)
        topo._graph, topo._make_graph = None, make_graph
        topo.route_table = route_table
        return topo

    def _setup(self, name: str, gpus: Sequence[str], servers: Sequence[str], gpu_server: Any) -> None:
        self.name = name
        self.gpus: Sequence[str] = gpus
        """GPU node names by GPU number (a preset's are computed on demand, `topology_names`)."""
        self.servers: Sequence[str] = servers
        self.gpu_server = gpu_server
        """Server number of each GPU (index into `servers`): an array, or a preset's `ServerOf`."""
        self._routes: dict[tuple[int, int], tuple[Edge, ...]] = {}
        self.link_attrs: dict[Edge, tuple[float, float, str]] = {}
        """(bw_bytes_per_s, latency_s, kind) of every directed link a computed route uses."""
        self.placement_cache: dict[Any, Any] = {}
        """Per-(degrees, placement) links and per-axis-shape GroupLinks, filled by `CommModel`."""
        self.route_table: RouteTable | None = None
        """Closed-form routes of a preset graph (set by `build_topology`); None: walk the graph."""

    def _index_graph(self, graph: nx.Graph, *, uniform: bool) -> None:
        """Per-server members, shared in-server paths and network attachments of `graph` (`uniform`:
        every server is built alike, so all share one signature)."""
        members: dict[str | None, list[str]] = {}
        for n, d in graph.nodes(data=True):
            members.setdefault(d.get("server"), []).append(n)
        self._members = {s: ns for s, ns in members.items() if s is not None}
        self._server_graphs: dict[tuple[str, bool], nx.Graph] = {}
        self._signature = (dict.fromkeys(self._members, 0) if uniform else _signatures(graph, self._members))
        self._local_paths: dict[tuple[int, bool, str, str], list[str]] = {}
        self._switches = _ordered_subgraph(graph, members.get(None, []))
        self._attach = {n: [m for m in graph.neighbors(n) if graph.nodes[m].get("server") is None]
                        for n, d in graph.nodes(data=True) if d["kind"] == "nic"}
        self._net_paths: dict[Edge, list[str]] = {}

    @property
    def graph(self) -> nx.Graph:
        """The networkx graph (a preset's is built and validated on first access)."""
        if self._graph is None:
            assert self._make_graph is not None
            graph = self._make_graph()
            validate_topology(graph, name=self.name)
            self._index_graph(graph, uniform=True)
            self._graph = graph
        return self._graph

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    def server_of(self, gpu: int) -> str:
        return self.servers[self.gpu_server[gpu]]

    def edge(self, u: str, v: str) -> dict[str, Any]:
        return self.graph.edges[u, v]

    def route(self, a: int, b: int) -> tuple[Edge, ...]:
        """Directed edges from GPU `a` to GPU `b` (global GPU indices): inside a server the widest
        shortest path of its fabric; across servers GPU -> its NIC -> network -> NIC -> GPU. A
        preset reads it from its route table (the same hops), other graphs walk the graph."""
        key = (a, b)
        hit = self._routes.get(key)
        if hit is not None:
            return hit
        table = self.route_table
        if table is not None and table.num_servers * table.gpus_per_node == self.num_gpus:
            ids = table.route_ids(a, b)
            route = tuple(map(table.link_name, ids))
            for i, e in zip(ids, route, strict=True):
                if e not in self.link_attrs:
                    self.link_attrs[e] = table.link_attrs(i)
        else:
            graph = self.graph
            route = self._route(self.gpus[a], self.gpus[b])
            for e in route:
                if e not in self.link_attrs:
                    d = graph.edges[e]
                    self.link_attrs[e] = (d["bw_bytes_per_s"], d["latency_s"], d["kind"])
        self._routes[key] = route
        return route

    def _server_graph(self, server: str, *, with_nics: bool) -> nx.Graph:
        key = (server, with_nics)
        if key not in self._server_graphs:
            nodes = [n for n in self._members[server] if with_nics or self.graph.nodes[n]["kind"] != "nic"]
            self._server_graphs[key] = _ordered_subgraph(self.graph, nodes)
        return self._server_graphs[key]

    def _in_server(self, server: str, u: str, v: str, *, with_nics: bool) -> list[str]:
        """Path inside `server`; servers with the same structure share one computed path."""
        sig = self._signature.get(server)
        if sig is None:
            return self._path(self._server_graph(server, with_nics=with_nics), u, v)
        cut = len(server) + 1
        key = (sig, with_nics, u[cut:], v[cut:])
        if key not in self._local_paths:
            path = self._path(self._server_graph(server, with_nics=with_nics), u, v)
            if any(self.graph.nodes[n].get("server") != server for n in path):
                return path  # left the server (no internal path): do not share
            self._local_paths[key] = [n[cut:] for n in path]
        return [f"{server}/{n}" for n in self._local_paths[key]]

    def _path(self, graph: nx.Graph, u: str, v: str) -> list[str]:
        try:
            return nx.shortest_path(graph, u, v, weight=_weight)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return nx.shortest_path(self.graph, u, v, weight=_weight)

    def _net_path(self, nic_a: str, nic_b: str) -> list[str]:
        """NIC to NIC through the network; cached per pair of attachment switches."""
        sa, sb = self._attach.get(nic_a, []), self._attach.get(nic_b, [])
        if len(sa) != 1 or len(sb) != 1:
            return self._path(self.graph, nic_a, nic_b)
        key = (sa[0], sb[0])
        if key not in self._net_paths:
            self._net_paths[key] = self._path(self._switches, *key)
        return [nic_a, *self._net_paths[key], nic_b]

    def _route(self, ga: str, gb: str) -> tuple[Edge, ...]:
        if ga == gb:
            return ()
        na, nb = self.graph.nodes[ga], self.graph.nodes[gb]
        if na["server"] == nb["server"]:
            nodes = self._in_server(na["server"], ga, gb, with_nics=False)
        elif na.get("nic") and nb.get("nic"):
            up = self._in_server(na["server"], ga, na["nic"], with_nics=True)
            mid = self._net_path(na["nic"], nb["nic"])
            down = self._in_server(nb["server"], nb["nic"], gb, with_nics=True)
            nodes = up + mid[1:] + down[1:]
        else:
            nodes = nx.shortest_path(self.graph, ga, gb, weight=_weight)
        return tuple(zip(nodes[:-1], nodes[1:], strict=True))


@lru_cache(maxsize=64)
def _build_cached(cluster_json: str, nodes_per_leaf: int) -> Topology:
    c = ClusterSpec.model_validate_json(cluster_json)
    gpn = c.gpus_per_node
    # names and server numbers computed on demand: no per-GPU object for GPUs no plan uses
    servers = PresetServers(c.num_nodes)
    gpus = PresetGpus(c.num_nodes, gpn)
    gpu_server = ServerOf(c.num_gpus, gpn)
    table = RouteTable.for_cluster(c, nodes_per_leaf=nodes_per_leaf, mesh_routes=_mesh_routes(c))
    return Topology._lazy(partial(preset_graph, c, nodes_per_leaf=nodes_per_leaf), name=c.name, gpus=gpus,
                          servers=servers, gpu_server=gpu_server, route_table=table)


def _mesh_routes(c: ClusterSpec) -> list[list[list[int]]] | None:
    """For cube-mesh servers (several equal-cost paths), the local GPU sequence of every pair's route
    as the graph walk picks it, found once in a one-server graph (servers are alike); else None."""
    if c.intra_node_topology != "cube-mesh":
        return None
    one = Topology(preset_graph(c.model_copy(update={"num_nodes": 1}), nodes_per_leaf=1), name=c.name)
    index = {gpu: i for i, gpu in enumerate(one.gpus)}
    return [[[i] + [index[v] for _, v in one.route(i, j)] for j in range(one.num_gpus)]
            for i in range(one.num_gpus)]


def build_topology(cluster: ClusterSpec, *, nodes_per_leaf: int = 1) -> Topology:
    """The graph of a `ClusterSpec` (cached per cluster). For 'fat-tree' and 'leaf-spine' networks
    `nodes_per_leaf` servers share a leaf switch whose spine uplink is oversubscribed by
    `cluster.oversubscription`; 'rail-optimized' puts NIC k of every server on rail switch k."""
    if nodes_per_leaf < 1:
        raise ValueError(f"nodes_per_leaf={nodes_per_leaf} must be >= 1")
    return _build_cached(cluster.model_dump_json(), nodes_per_leaf)


def load_topology(path: str | Path) -> Topology:
    """A cluster graph from a YAML/JSON file::

        name: two-boxes
        nodes:                                  # kind: gpu | switch | nic; server: None for the network
          - {id: n0/gpu0, kind: gpu, server: n0}
          - {id: n0/sw, kind: switch, server: n0}
          - {id: n0/nic0, kind: nic, server: n0}
          - {id: spine, kind: switch}
        links:                                  # bw per direction: '400Gbps', '50GB/s' or bytes/s
          - {a: n0/gpu0, b: n0/sw, bw: 300GB/s, latency: 2.5us}

    GPUs are numbered in file order; a GPU may name its `nic` (default: the nearest NIC in its server).
    A missing path, a zero bandwidth or an unlinked GPU raises ValueError naming it."""
    path = Path(path)
    where = f"topology file {shown_path(path)}"
    data = read_yaml(path, what="topology file")
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not isinstance(data.get("links"), list):
        raise ValueError(f"{where}: needs a mapping with lists 'nodes' and 'links'")
    if len(data["nodes"]) > MAX_FILE_NODES or len(data["links"]) > 4 * MAX_FILE_NODES:
        raise ValueError(f"{where}: {len(data['nodes']):,} nodes and {len(data['links']):,} links; a topology file "
                         f"holds at most {MAX_FILE_NODES:,} nodes (larger clusters: a preset with --nodes)")
    g = nx.Graph()
    index = 0
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or "id" not in node:
            raise ValueError(f"{where}: nodes[{i}] needs an 'id'")
        kind = node.get("kind", "switch")
        if not isinstance(kind, str) or kind not in ("gpu", "switch", "nic"):
            raise ValueError(f"{where}: node {shown(node['id'])} has kind {shown(kind)}; use gpu, switch or nic")
        server = node.get("server")
        if server is not None and not isinstance(server, (str, int)):
            raise ValueError(f"{where}: node {shown(node['id'])} has server {shown(server)}; give a server name")
        attrs: dict[str, Any] = {"kind": kind, "server": None if server is None else str(server)}
        if kind == "gpu":
            if attrs["server"] is None:
                raise ValueError(f"{where}: GPU {node['id']!r} needs a 'server'")
            attrs.update(index=index, nic=node.get("nic"))
            index += 1
        g.add_node(str(node["id"]), **attrs)
    for i, link in enumerate(data["links"]):
        if not isinstance(link, dict) or "a" not in link or "b" not in link:
            raise ValueError(f"{where}: links[{i}] needs endpoints 'a' and 'b'")
        a, b = str(link["a"]), str(link["b"])
        for end in (a, b):
            if end not in g:
                raise ValueError(f"{where}: link {a}-{b} names undeclared node {end!r}; add it to 'nodes'")
        raw_bw = link.get("bw", link.get("bw_bytes_per_s"))
        if raw_bw is None:
            raise ValueError(f"{where}: link {a}-{b} needs 'bw'")
        bw = parse_bandwidth(raw_bw, what=f"{where}: link {a}-{b} bw")
        lat = parse_latency(link.get("latency", link.get("latency_s", 0.0)), what=f"{where}: link {a}-{b} latency")
        g.add_edge(a, b, bw_bytes_per_s=bw, latency_s=lat, kind=str(link.get("kind", "link")))
    _assign_nics(g)
    return Topology(g, name=str(data.get("name", path.stem)))


def _assign_nics(g: nx.Graph) -> None:
    """Give each GPU without an explicit `nic` the nearest NIC of its server (if the server has one)."""
    members: dict[Any, list[str]] = {}
    for n, e in g.nodes(data=True):
        if e.get("server") is not None:
            members.setdefault(e["server"], []).append(n)
    for gpu, d in g.nodes(data=True):
        if d["kind"] != "gpu" or d.get("nic"):
            continue
        server_nodes = members.get(d["server"], [])
        sub = g.subgraph(server_nodes)
        nics = [n for n in server_nodes if g.nodes[n]["kind"] == "nic"]
        if not nics:
            continue
        dist = nx.single_source_dijkstra_path_length(sub, gpu, weight=_weight)
        reachable = [n for n in nics if n in dist]
        d["nic"] = min(reachable, key=lambda n: (dist[n], n)) if reachable else None
