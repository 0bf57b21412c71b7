"""Closed-form routes of the preset cluster graphs (`costmodel.topology.build_topology`), vectorized.

On a preset graph every GPU-to-GPU route is unique and follows from the rank numbers alone (a
tree: GPU - server hub - GPU inside a server; GPU - NIC - rail/leaf switch [- spine - switch] -
NIC - GPU across servers), so the links a set of concurrent flows loads can be counted with numpy
instead of walking the graph flow by flow. `RouteTable.price(src, dst)` returns exactly what
`placement.price_flows` computes by graph walk (same loads, same bottleneck share, same latency
sums in route order); tests/test_costmodel_route_table.py checks the two agree on every preset
fabric. Cube-mesh servers (several equal-cost paths) are not covered: `for_cluster` returns None
and the graph walk prices them."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RouteTable", "PricedFlows"]

PricedFlows = tuple[float, float, int, tuple[str, ...]]
"""(bottleneck bw_bytes_per_s after sharing, largest path latency_s, most flows on one link, link kinds)."""


class RouteTable:
    """Directed links of a preset cluster as integer ids, with each flow's route as a row of ids.

    Id blocks (S servers, G GPUs and N NICs per server, W network switches): GPU->hub, hub->GPU,
    GPU->NIC, NIC->GPU (S*G each), NIC->hub, hub->NIC, NIC->switch, switch->NIC (S*N each),
    switch->spine, spine->switch (W each)."""

    def __init__(self, cluster: Any, *, nodes_per_leaf: int) -> None:
        c = cluster
        s, g, n = c.num_nodes, c.gpus_per_node, c.nics_per_node
        self.num_servers, self.gpus_per_node, self.nics_per_node = s, g, n
        self.pcie_hub = c.intra_node_topology == "pcie"
        if c.network == "rail-optimized":
            self.num_switches = n
            self.has_spine = n > 1
            self._switch_of = lambda srv, nic: nic  # rail k holds NIC k of every server
            up_bw = np.full(n, s * c.inter_node_link.bw_bytes_per_s / c.oversubscription)
        else:
            leaves = (s + nodes_per_leaf - 1) // nodes_per_leaf
            self.num_switches = leaves
            self.has_spine = leaves > 1
            self._switch_of = lambda srv, nic: srv // nodes_per_leaf
            members = np.minimum(nodes_per_leaf, s - np.arange(leaves) * nodes_per_leaf)
            up_bw = members * n * c.inter_node_link.bw_bytes_per_s / c.oversubscription
        sg, sn, w = s * g, s * n, self.num_switches
        sizes = [sg, sg, sg, sg, sn, sn, sn, sn, w, w]
        self._base = np.concatenate([[0], np.cumsum(sizes)])
        intra, nic = c.intra_node_link, c.inter_node_link
        kinds = [intra.name, "pcie", nic.name, "uplink"]
        spec = [(intra.bw_bytes_per_s, intra.latency_s / 2, 0)] * 2 + [(nic.bw_bytes_per_s, 0.0, 1)] * 4 \
            + [(nic.bw_bytes_per_s, nic.latency_s / 2, 2)] * 2
        bw = [np.full(sz, b) for sz, (b, _, _) in zip(sizes[:8], spec, strict=True)] + [up_bw, up_bw]
        lat = [np.full(sz, la) for sz, (_, la, _) in zip(sizes[:8], spec, strict=True)] + [np.zeros(w)] * 2
        kind = [np.full(sz, k) for sz, (_, _, k) in zip(sizes[:8], spec, strict=True)] + [np.full(w, 3)] * 2
        self.bw = np.concatenate(bw).astype(float)
        self.lat = np.concatenate(lat).astype(float)
        self.kind = np.concatenate(kind).astype(np.int64)
        self.kind_names = kinds

    @classmethod
    def for_cluster(cls, cluster: Any, *, nodes_per_leaf: int) -> RouteTable | None:
        """The table of a preset graph, or None where routes are not unique (cube-mesh servers)."""
        if cluster.intra_node_topology == "cube-mesh":
            return None
        return cls(cluster, nodes_per_leaf=nodes_per_leaf)

    def _id(self, block: int, index: np.ndarray) -> np.ndarray:
        return self._base[block] + index

    def routes(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Link ids of each flow's route in hop order, left-aligned, padded with -1: shape (flows, 8)."""
        src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        g, n = self.gpus_per_node, self.nics_per_node
        sa, ja, sb, jb = src // g, src % g, dst // g, dst % g
        ka, kb = ja * n // g, jb * n // g
        na, nb = sa * n + ka, sb * n + kb
        wa, wb = self._switch_of(sa, ka), self._switch_of(sb, kb)
        out = np.full((src.size, 8), -1, dtype=np.int64)
        same = sa == sb
        # inside a server: GPU -> hub -> GPU
        out[same, 0] = self._id(0, src[same])
        out[same, 1] = self._id(1, dst[same])
        x = ~same & (src != dst)
        cols: list[np.ndarray] = []
        if self.pcie_hub:  # GPU -> PCIe bridge -> NIC
            cols += [self._id(0, src[x]), self._id(5, na[x])]
        else:  # GPU's own PCIe path to its NIC
            cols += [self._id(2, src[x])]
        cols.append(self._id(6, na[x]))
        hop = np.full((2, int(x.sum())), -1, dtype=np.int64)
        if self.has_spine:
            cross = wa[x] != wb[x]
            hop[0, cross] = self._id(8, wa[x][cross])
            hop[1, cross] = self._id(9, wb[x][cross])
        cols += [hop[0], hop[1], self._id(7, nb[x])]
        if self.pcie_hub:
            cols += [self._id(4, nb[x]), self._id(1, dst[x])]
        else:
            cols.append(self._id(3, dst[x]))
        block = np.stack(cols, axis=1)
        # left-align: move the -1 of same-switch flows (no spine hops) to the end, keeping hop order
        order = np.argsort(block < 0, axis=1, kind="stable")
        out[x, :block.shape[1]] = np.take_along_axis(block, order, axis=1)
        out[src == dst] = -1
        return out

    def price(self, src: np.ndarray, dst: np.ndarray) -> PricedFlows:
        """What `placement.price_flows` returns for flows src[i] -> dst[i], by counting link ids."""
        r = self.routes(src, dst)
        used = r[r >= 0]
        if used.size == 0:
            return float("inf"), 0.0, 0, ()
        load = np.bincount(used, minlength=self.bw.size)
        hit = np.flatnonzero(load)
        bw = float(np.min(self.bw[hit] / load[hit]))
        lat = np.zeros(r.shape[0])
        for j in range(r.shape[1]):  # sum in route order, as the graph walk does
            col = r[:, j]
            lat = lat + np.where(col >= 0, self.lat[np.maximum(col, 0)], 0.0)
        kinds = tuple(sorted({self.kind_names[k] for k in np.unique(self.kind[hit]).tolist()}))
        return bw, float(lat.max()), int(load.max()), kinds
