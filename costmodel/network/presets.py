"""The networkx graphs of preset clusters (`ClusterSpec`), as `costmodel.network.topology.build_topology` builds
them on demand.

Servers follow the public system descriptions: DGX-style NVSwitch (every GPU one hop from the switch),
DGX-1 hybrid cube-mesh (two fully connected quads plus i<->i+4, NVIDIA DGX-1 whitepaper 2017), PCIe
boxes (GPUs and NICs behind one host bridge); networks: rail-optimized fat tree (NIC k of every server
on rail switch k, NVIDIA DGX SuperPOD reference architecture) and two-tier leaf/spine with an
oversubscription ratio (leaf uplink = downlink capacity / ratio). Link latencies are split so that a
GPU-switch-GPU path costs the intra-node link's latency and a NIC-switch-NIC path the NIC's. Node names
('n<s>/gpu<j>', 'n<s>/<hub>', 'n<s>/nic<k>', 'rail<k>', 'leaf<l>', 'spine') are the ones
`costmodel.network.route_table` computes routes for."""

from __future__ import annotations

import networkx as nx

from ..specs import ClusterSpec

__all__ = ["preset_graph"]


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


def preset_graph(c: ClusterSpec, *, nodes_per_leaf: int) -> nx.Graph:
    """The networkx graph of preset `c` (see the module docstring)."""
    g = nx.Graph()
    for s in range(c.num_nodes):
        _add_server(g, c, s)
    _add_network(g, c, nodes_per_leaf)
    return g
