"""Cluster graphs (networkx): GPUs, the fabric inside a server, NICs and the network between servers.

Nodes carry `kind` ('gpu', 'switch', 'nic') and `server` (None for network switches); GPU nodes carry
`index` (global GPU number; rank r of a plan runs on GPU r) and `nic` (the NIC its inter-server
traffic leaves through, as NCCL binds each GPU to its nearest NIC). Edges are full duplex and carry
`bw_bytes_per_s` (per direction), `latency_s` and `kind`.

Presets follow the public system descriptions: DGX-style NVSwitch (every GPU one hop from the switch),
DGX-1 hybrid cube-mesh (two fully connected quads plus i<->i+4, NVIDIA DGX-1 whitepaper 2017), PCIe
boxes (GPUs and NICs behind one host bridge); rail-optimized fat tree (NIC k of every server on rail
switch k, NVIDIA DGX SuperPOD reference architecture) and two-tier leaf/spine with an
oversubscription ratio (leaf uplink = downlink capacity / ratio). Link latencies are split so that a
GPU-switch-GPU path costs the intra-node link's latency and a NIC-switch-NIC path the NIC's."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import yaml

from .route_table import RouteTable
from .specs import ClusterSpec
from .topology_check import validate_topology
from .units import parse_bandwidth, parse_latency

__all__ = ["Topology", "build_topology", "load_topology", "validate_topology"]

Edge = tuple[str, str]


class Topology:
    """A validated cluster graph with cached GPU-to-GPU routes."""

    def __init__(self, graph: nx.Graph, *, name: str = "custom") -> None:
        validate_topology(graph, name=name)
        self.graph = graph
        self.name = name
        gpus = sorted((n for n, d in graph.nodes(data=True) if d["kind"] == "gpu"),
                      key=lambda n: graph.nodes[n]["index"])
        self.gpus: tuple[str, ...] = tuple(gpus)
        self.servers: tuple[str, ...] = tuple(dict.fromkeys(graph.nodes[g]["server"] for g in gpus))
        sidx = {s: i for i, s in enumerate(self.servers)}
        self.gpu_server = np.array([sidx[graph.nodes[g]["server"]] for g in gpus], dtype=np.int64)
        """Server number of each GPU (index into `servers`)."""
        members: dict[str | None, list[str]] = {}
        for n, d in graph.nodes(data=True):
            members.setdefault(d.get("server"), []).append(n)
        self._members = {s: ns for s, ns in members.items() if s is not None}
        self._server_graphs: dict[tuple[str, bool], nx.Graph] = {}
        self._signature = _signatures(graph, self._members)
        self._local_paths: dict[tuple[int, bool, str, str], list[str]] = {}
        self._switches = graph.subgraph(members.get(None, [])).copy()
        self._attach = {n: [m for m in graph.neighbors(n) if graph.nodes[m].get("server") is None]
                        for n, d in graph.nodes(data=True) if d["kind"] == "nic"}
        self._routes: dict[Edge, tuple[Edge, ...]] = {}
        self._net_paths: dict[Edge, list[str]] = {}
        self.link_attrs: dict[Edge, tuple[float, float, str]] = {}
        """(bw_bytes_per_s, latency_s, kind) of every directed link a computed route uses."""
        self.placement_cache: dict[Any, Any] = {}
        """Per-(degrees, placement) links and per-axis-shape GroupLinks, filled by `CommModel`."""
        self.route_table: RouteTable | None = None
        """Closed-form routes of a preset graph (set by `build_topology`); None: walk the graph."""

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    def server_of(self, gpu: int) -> str:
        return self.graph.nodes[self.gpus[gpu]]["server"]

    def edge(self, u: str, v: str) -> dict[str, Any]:
        return self.graph.edges[u, v]

    def route(self, a: int, b: int) -> tuple[Edge, ...]:
        """Directed edges from GPU `a` to GPU `b` (global GPU indices): inside a server the widest
        shortest path of its fabric; across servers GPU -> its NIC -> network -> NIC -> GPU."""
        key = (self.gpus[a], self.gpus[b])
        if key not in self._routes:
            route = self._route(*key)
            for e in route:
                if e not in self.link_attrs:
                    d = self.graph.edges[e]
                    self.link_attrs[e] = (d["bw_bytes_per_s"], d["latency_s"], d["kind"])
            self._routes[key] = route
        return self._routes[key]

    def _server_graph(self, server: str, *, with_nics: bool) -> nx.Graph:
        key = (server, with_nics)
        if key not in self._server_graphs:
            nodes = [n for n in self._members[server] if with_nics or self.graph.nodes[n]["kind"] != "nic"]
            self._server_graphs[key] = self.graph.subgraph(nodes).copy()
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


def _signatures(graph: nx.Graph, members: dict[str, list[str]]) -> dict[str, int]:
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


def _weight(u: str, v: str, d: dict[str, Any]) -> float:
    """Routing cost: prefer wide links, then few hops (time to move 1 MB plus the hop's latency)."""
    return 1e6 / d["bw_bytes_per_s"] + d["latency_s"]


def _add_server(g: nx.Graph, c: ClusterSpec, s: int) -> None:
    server, intra, nic_link = f"n{s}", c.intra_node_link, c.inter_node_link
    gpn, nics = c.gpus_per_node, c.nics_per_node
    gpus = [f"{server}/gpu{j}" for j in range(gpn)]
    for j, gpu in enumerate(gpus):
        g.add_node(gpu, kind="gpu", server=server, index=s * gpn + j, nic=f"{server}/nic{j * nics // gpn}")
    hub = {"nvswitch": "nvswitch", "none": "host", "pcie": "pcie"}.get(c.intra_node_topology)
    if hub:
        g.add_node(f"{server}/{hub}", kind="switch", server=server)
        for gpu in gpus:
            g.add_edge(gpu, f"{server}/{hub}", bw_bytes_per_s=intra.bw_bytes_per_s,
                       latency_s=intra.latency_s / 2, kind=intra.name)
    else:  # cube-mesh: two fully connected quads plus i <-> i+4; a GPU's NVLinks split over 4 peers
        if gpn != 8:
            raise ValueError(f"intra_node_topology='cube-mesh' needs gpus_per_node=8 (got {gpn}); "
                             "use 'nvswitch' or 'pcie'")
        pairs = [(i, j) for q in (0, 4) for i in range(q, q + 4) for j in range(i + 1, q + 4)]
        pairs += [(i, i + 4) for i in range(4)]
        for i, j in pairs:
            g.add_edge(gpus[i], gpus[j], bw_bytes_per_s=intra.bw_bytes_per_s / 4,
                       latency_s=intra.latency_s, kind=intra.name)
    for k in range(nics):
        nic = f"{server}/nic{k}"
        g.add_node(nic, kind="nic", server=server)
        if hub == "pcie":  # NICs sit behind the same host bridge as the GPUs
            g.add_edge(nic, f"{server}/pcie", bw_bytes_per_s=nic_link.bw_bytes_per_s, latency_s=0.0,
                       kind="pcie")
    if hub != "pcie":
        for j, gpu in enumerate(gpus):  # each GPU's own PCIe path to its NIC
            g.add_edge(gpu, f"{server}/nic{j * nics // gpn}", bw_bytes_per_s=nic_link.bw_bytes_per_s,
                       latency_s=0.0, kind="pcie")


def _add_network(g: nx.Graph, c: ClusterSpec, nodes_per_leaf: int) -> None:
    nic = c.inter_node_link
    half = nic.latency_s / 2
    if c.network == "rail-optimized":
        for k in range(c.nics_per_node):
            g.add_node(f"rail{k}", kind="switch", server=None)
            for s in range(c.num_nodes):
                g.add_edge(f"n{s}/nic{k}", f"rail{k}", bw_bytes_per_s=nic.bw_bytes_per_s, latency_s=half,
                           kind=nic.name)
            if c.nics_per_node > 1:  # cross-rail traffic goes up to the spine
                g.add_edge(f"rail{k}", "spine", bw_bytes_per_s=c.num_nodes * nic.bw_bytes_per_s / c.oversubscription,
                           latency_s=0.0, kind="uplink")
        if c.nics_per_node > 1:
            g.nodes["spine"].update(kind="switch", server=None)
        return
    leaves = (c.num_nodes + nodes_per_leaf - 1) // nodes_per_leaf
    for leaf in range(leaves):
        servers = range(leaf * nodes_per_leaf, min(c.num_nodes, (leaf + 1) * nodes_per_leaf))
        g.add_node(f"leaf{leaf}", kind="switch", server=None)
        for s in servers:
            for k in range(c.nics_per_node):
                g.add_edge(f"n{s}/nic{k}", f"leaf{leaf}", bw_bytes_per_s=nic.bw_bytes_per_s, latency_s=half,
                           kind=nic.name)
        if leaves > 1:
            down = len(servers) * c.nics_per_node * nic.bw_bytes_per_s
            g.add_edge(f"leaf{leaf}", "spine", bw_bytes_per_s=down / c.oversubscription, latency_s=0.0,
                       kind="uplink")
    if leaves > 1:
        g.nodes["spine"].update(kind="switch", server=None)


@lru_cache(maxsize=64)
def _build_cached(cluster_json: str, nodes_per_leaf: int) -> Topology:
    c = ClusterSpec.model_validate_json(cluster_json)
    g = nx.Graph()
    for s in range(c.num_nodes):
        _add_server(g, c, s)
    _add_network(g, c, nodes_per_leaf)
    topo = Topology(g, name=c.name)
    topo.route_table = RouteTable.for_cluster(c, nodes_per_leaf=nodes_per_leaf)
    return topo


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
    if not path.is_file():
        raise ValueError(f"topology file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"topology file {str(path)!r} is neither YAML nor JSON: {exc}") from None
    where = f"topology file {str(path)!r}"
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not isinstance(data.get("links"), list):
        raise ValueError(f"{where}: needs a mapping with lists 'nodes' and 'links'")
    g = nx.Graph()
    index = 0
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or "id" not in node:
            raise ValueError(f"{where}: nodes[{i}] needs an 'id'")
        kind = node.get("kind", "switch")
        if kind not in ("gpu", "switch", "nic"):
            raise ValueError(f"{where}: node {node['id']!r} has kind {kind!r}; use gpu, switch or nic")
        attrs: dict[str, Any] = {"kind": kind, "server": node.get("server")}
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
    for gpu, d in g.nodes(data=True):
        if d["kind"] != "gpu" or d.get("nic"):
            continue
        server_nodes = [n for n, e in g.nodes(data=True) if e.get("server") == d["server"]]
        sub = g.subgraph(server_nodes)
        nics = [n for n in server_nodes if g.nodes[n]["kind"] == "nic"]
        if not nics:
            continue
        dist = nx.single_source_dijkstra_path_length(sub, gpu, weight=_weight)
        reachable = [n for n in nics if n in dist]
        d["nic"] = min(reachable, key=lambda n: (dist[n], n)) if reachable else None
