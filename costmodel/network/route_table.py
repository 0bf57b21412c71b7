"""Closed-form routes of the preset cluster graphs (`costmodel.network.topology.build_topology`), vectorized.

On a preset graph every GPU-to-GPU route follows from the GPU numbers alone (GPU - server hub - GPU
inside a server, or over one or two NVLinks of a cube-mesh server; GPU - NIC - rail/leaf switch
[- spine - switch] - NIC - GPU across servers), so the links a set of concurrent flows loads can be
counted with numpy instead of walking the graph flow by flow, and without building the graph at all.
`RouteTable.price(src, dst)` returns exactly what `placement.walk_flows` computes by graph walk
(same loads, same bottleneck share, same latency sums in route order), `route_ids(a, b)` and
`route_edges(src, dst)` the walk's hops (names: `costmodel.network.route_names`);
tests/test_costmodel_route_table.py and test_costmodel_route_lazy.py check them on 12 preset fabrics.
Cube-mesh servers have several equal-cost two-hop paths: `for_cluster` needs the walk's pick per GPU
pair (`mesh_routes`, which `build_topology` finds in a one-server graph), else returns None and the
graph walk prices them."""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from .route_names import Edge, Hops, LinkNames

__all__ = ["RouteTable", "PricedFlows", "Hops"]

PricedFlows = tuple[float, float, int, tuple[str, ...]]
"""(bottleneck bw_bytes_per_s after sharing, largest path latency_s, most flows on one link, link kinds)."""

_HUBS = {"nvswitch": "nvswitch", "none": "host", "pcie": "pcie"}


class RouteTable(LinkNames):
    """Directed links of a preset cluster as integer ids, with each flow's route as a row of ids.

    Id blocks (S servers, G GPUs and N NICs per server, W network switches): GPU->hub, hub->GPU,
    GPU->NIC, NIC->GPU (S*G each), NIC->hub, hub->NIC, NIC->switch, switch->NIC (S*N each),
    switch->spine, spine->switch (W each), GPU->GPU (S*G*G, cube-mesh servers only). Every block but
    the spine uplinks has one bandwidth and one latency; uplinks have latency 0.

    Cube-mesh servers route a GPU pair over one or two NVLinks; `mesh_routes[i][j]` (local GPU
    numbers from i to j, as the graph walk found them in one server) fixes which."""

    def __init__(self, cluster: Any, *, nodes_per_leaf: int, mesh_routes: Any = None) -> None:
        c = cluster
        s, g, n = c.num_nodes, c.gpus_per_node, c.nics_per_node
        self.num_servers, self.gpus_per_node, self.nics_per_node = s, g, n
        self.pcie_hub = c.intra_node_topology == "pcie"
        self.hub = _HUBS.get(c.intra_node_topology, "(no hub)")
        self.mesh = None if mesh_routes is None else _mesh_table(mesh_routes, g)
        """Local GPU->GPU link numbers (i*G + j) of each pair's route, -1 padded: shape (G, G, hops)."""
        self.rails = c.network == "rail-optimized"
        self.nodes_per_leaf = nodes_per_leaf
        self._nic_bw, self._over = c.inter_node_link.bw_bytes_per_s, c.oversubscription
        if self.rails:
            self.num_switches = n
            self.has_spine = n > 1
        else:
            leaves = (s + nodes_per_leaf - 1) // nodes_per_leaf
            self.num_switches = leaves
            self.has_spine = leaves > 1
        sg, sn, w = s * g, s * n, self.num_switches
        sizes = [sg, sg, sg, sg, sn, sn, sn, sn, w, w, sg * g if self.mesh is not None else 0]
        self._base = np.concatenate([[0], np.cumsum(sizes)])
        self._base_list: list[int] = self._base.tolist()
        intra, nic = c.intra_node_link, c.inter_node_link
        self.kind_names = [intra.name, "pcie", nic.name, "uplink"]
        # (bw_bytes_per_s, latency_s, kind code) of every block; 8-9 (uplinks) carry `up_bw_bytes_per_s`
        # of their switch; cube-mesh: a GPU's NVLink bandwidth is split over its direct peers
        # (costmodel.network.presets). Blocks are uniform, so no per-link array is stored.
        peers = 1 if self.mesh is None else int(((self.mesh[0] >= 0).sum(axis=1) == 1).sum())
        self.block_spec = [(intra.bw_bytes_per_s, intra.latency_s / 2, 0)] * 2 \
            + [(nic.bw_bytes_per_s, 0.0, 1)] * 4 + [(nic.bw_bytes_per_s, nic.latency_s / 2, 2)] * 2 \
            + [(float("nan"), 0.0, 3)] * 2 + [(intra.bw_bytes_per_s / peers, intra.latency_s, 0)]
        self._names: dict[int, Edge] = {}

    def up_bw_bytes_per_s(self, switch: Any) -> Any:
        """Spine uplink bandwidth of network switch `switch` (an int or an array): a rail carries one
        NIC of every server, a leaf `nodes_per_leaf` servers' NICs (fewer on the last leaf), divided
        by the oversubscription."""
        if self.rails:
            members = self.num_servers * np.ones_like(np.asarray(switch, dtype=float))
        else:
            first = np.asarray(switch, dtype=np.int64) * self.nodes_per_leaf
            members = np.minimum(self.nodes_per_leaf, self.num_servers - first) * self.nics_per_node
        return members * self._nic_bw / self._over

    @classmethod
    def for_cluster(cls, cluster: Any, *, nodes_per_leaf: int, mesh_routes: Any = None) -> RouteTable | None:
        """The table of a preset graph, or None for cube-mesh servers without their `mesh_routes`."""
        if cluster.intra_node_topology == "cube-mesh" and mesh_routes is None:
            return None
        return cls(cluster, nodes_per_leaf=nodes_per_leaf, mesh_routes=mesh_routes)

    def _switch_of(self, server: Any, nic: Any) -> Any:
        """Network switch of NIC `nic` of `server`: rail k holds NIC k of every server; a leaf holds
        `nodes_per_leaf` consecutive servers."""
        return nic if self.rails else server // self.nodes_per_leaf

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
        if self.mesh is None:  # inside a server: GPU -> hub -> GPU
            out[same, 0] = self._id(0, src[same])
            out[same, 1] = self._id(1, dst[same])
        else:  # GPU -> GPU over the server's NVLinks
            ids = self._mesh_ids(src[same], dst[same])
            out[same, :ids.shape[1]] = ids
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

    def route_ids(self, a: int, b: int) -> list[int]:
        """Link ids of the route from GPU `a` to GPU `b` in hop order: one row of `routes`, in plain
        Python (a single route costs less this way than through numpy)."""
        g, n = self.gpus_per_node, self.nics_per_node
        sa, sb = a // g, b // g
        base = self._base_list
        if a == b:
            return []
        if sa == sb:
            if self.mesh is None:
                return [base[0] + a, base[1] + b]
            return [base[10] + sa * g * g + hop for hop in self.mesh[a - sa * g, b - sb * g].tolist() if hop >= 0]
        ka, kb = (a - sa * g) * n // g, (b - sb * g) * n // g
        na, nb = sa * n + ka, sb * n + kb
        up = [base[0] + a, base[5] + na] if self.pcie_hub else [base[2] + a]
        down = [base[4] + nb, base[1] + b] if self.pcie_hub else [base[3] + b]
        wa, wb = self._switch_of(sa, ka), self._switch_of(sb, kb)
        spine = [base[8] + wa, base[9] + wb] if self.has_spine and wa != wb else []
        return [*up, base[6] + na, *spine, base[7] + nb, *down]

    def _mesh_ids(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """GPU->GPU link ids of intra-server flows on cube-mesh servers, hop order, -1 padded."""
        g = self.gpus_per_node
        local = self.mesh[src % g, dst % g]
        return np.where(local >= 0, self._base[10] + (src // g * g * g)[:, None] + local, -1)

    def _hop_blocks(self, *, cross: bool, spine: bool) -> list[int]:
        """Blocks of one route kind's hops, in hop order (inside a server, or across via a switch
        or via the spine)."""
        if not cross:
            return [0, 1]
        up = [0, 5] if self.pcie_hub else [2]
        down = [4, 1] if self.pcie_hub else [3]
        return up + [6] + ([8, 9] if spine else []) + [7] + down

    def _route_latency_s(self, blocks: list[int]) -> float:
        """A route's latency summed hop by hop from 0.0, in hop order (as the graph walk sums it)."""
        lat = 0.0
        for b in blocks:
            lat = lat + self.block_spec[b][1]
        return lat

    def price(self, src: np.ndarray, dst: np.ndarray) -> PricedFlows:
        """What `placement.walk_flows` returns for flows src[i] -> dst[i]: the links each block's
        flows load are counted per block (a flow loads one link of each block on its route), so
        min over links of bw / load is, per block of equal bandwidth, bw / (most loaded link)."""
        src, dst = np.asarray(src, dtype=np.int64).ravel(), np.asarray(dst, dtype=np.int64).ravel()
        g, n = self.gpus_per_node, self.nics_per_node
        move = src != dst
        if not move.all():
            src, dst = src[move], dst[move]
        if src.size == 0:
            return float("inf"), 0.0, 0, ()
        sa, sb = src // g, dst // g
        same = sa == sb
        inside = int(np.count_nonzero(same))
        per_block: dict[int, list[np.ndarray]] = {}  # block -> indices of its loaded links (one per flow)
        lats: list[float] = []
        if inside:
            ss, sd = (src[same], dst[same]) if inside < src.size else (src, dst)
            if self.mesh is None:
                per_block[0], per_block[1] = [ss], [sd]
                lats.append(self._route_latency_s(self._hop_blocks(cross=False, spine=False)))
            else:
                ids = self._mesh_ids(ss, sd)
                per_block[10] = [ids[ids >= 0]]
                lats += [self._route_latency_s([10] * h) for h in np.unique((ids >= 0).sum(axis=1)).tolist()]
        if inside < src.size:
            if inside:
                x = ~same
                xs, xd, sax, sbx = src[x], dst[x], sa[x], sb[x]
            else:
                xs, xd, sax, sbx = src, dst, sa, sb
            if n == g:  # one NIC per GPU: NIC number == GPU number
                na, nb = xs, xd
            else:
                na = sax * n + (xs - sax * g) * n // g
                nb = sbx * n + (xd - sbx * g) * n // g
            if self.pcie_hub:
                per_block.setdefault(0, []).append(xs)
                per_block.setdefault(1, []).append(xd)
                per_block[5], per_block[4] = [na], [nb]
            else:
                per_block[2], per_block[3] = [xs], [xd]
            per_block[6], per_block[7] = [na], [nb]
            via = [False]
            if self.has_spine:
                wa, wb = self._switch_of(sax, na - sax * n), self._switch_of(sbx, nb - sbx * n)
                spine = wa != wb
                up = int(np.count_nonzero(spine))
                if up:
                    per_block[8], per_block[9] = [wa[spine]], [wb[spine]]
                via = [False, True] if up < spine.size else [True]
            lats += [self._route_latency_s(self._hop_blocks(cross=True, spine=v)) for v in via]
        tops: dict[int, np.ndarray] = {}  # the same index array loads blocks alike: count it once
        bw, most, kinds = float("inf"), 0, set()
        for b, parts in per_block.items():
            key = id(parts[0]) if len(parts) == 1 else -b
            load = tops.get(key)
            if load is None:
                load = tops[key] = np.bincount(np.concatenate(parts) if len(parts) > 1 else parts[0])
            top = int(load.max())
            most = max(most, top)
            if b == 8 or b == 9:
                hit = np.flatnonzero(load)
                bw = min(bw, float(np.min(self.up_bw_bytes_per_s(hit) / load[hit])))
                kinds.add(self.kind_names[3])
            else:
                bw = min(bw, self.block_spec[b][0] / top)
                kinds.add(self.kind_names[self.block_spec[b][2]])
        return bw, max(lats), most, tuple(sorted(kinds))

    def link_attrs(self, link: int) -> tuple[float, float, str]:
        """(bw_bytes_per_s, latency_s, kind) of directed link id `link`."""
        block = bisect.bisect_right(self._base_list, link) - 1
        bw, lat, kind = self.block_spec[block]
        if block in (8, 9):
            bw = float(self.up_bw_bytes_per_s(link - self._base_list[block]))
        return float(bw), float(lat), self.kind_names[kind]


def _mesh_table(mesh_routes: Any, g: int) -> np.ndarray:
    """(G, G, hops) local link numbers i*G + j of each GPU pair's route, from its node sequence."""
    hops = max(len(p) - 1 for row in mesh_routes for p in row)
    out = np.full((g, g, max(hops, 1)), -1, dtype=np.int64)
    for i, row in enumerate(mesh_routes):
        for j, path in enumerate(row):
            for h, (u, v) in enumerate(zip(path[:-1], path[1:], strict=True)):
                out[i, j, h] = u * g + v
    return out
