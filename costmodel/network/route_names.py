"""Names of a route table's links (`costmodel.network.route_table.RouteTable` inherits `LinkNames`): node
names as `costmodel.network.presets` builds them, both ends of every link id, named routes, and
`Hops`, the named hops of a set of flows computed on first use (`GroupLink.edges` on preset
topologies, where naming every hop of a 16,384-GPU group up front costs more than pricing it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["Edge", "Hops", "LinkNames"]

Edge = tuple[str, str]


class LinkNames:
    """Naming methods of `RouteTable` (they read its sizes, `hub`, `rails`, `mesh`, `_switch_of`,
    `_base_list` and `routes`; the table's constructor sets `_names`). Names are computed from link
    and node numbers for the links asked about only: a 2^20-GPU table names no link up front."""

    def node_name(self, node: int) -> str:
        """Name of node number `node`: GPUs (S*G), server hubs (S), NICs (S*N), network switches (W),
        the spine, numbered in that order."""
        s, g, n, w = self.num_servers, self.gpus_per_node, self.nics_per_node, self.num_switches
        if node < s * g:
            return f"n{node // g}/gpu{node % g}"
        node -= s * g
        if node < s:
            return f"n{node}/{self.hub}"
        node -= s
        if node < s * n:
            return f"n{node // n}/nic{node % n}"
        node -= s * n
        if node < w:
            return f"rail{node}" if self.rails else f"leaf{node}"
        return "spine"

    def _ends_of(self, links: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Node numbers (see `node_name`) of the two ends (from, to) of every link id in `links`."""
        s, g, n, w = self.num_servers, self.gpus_per_node, self.nics_per_node, self.num_switches
        links = np.asarray(links, dtype=np.int64)
        base = np.asarray(self._base_list, dtype=np.int64)
        block = np.searchsorted(base, links, side="right") - 1
        i = links - base[block]
        hub0, nic0, sw0 = s * g, s * g + s, s * g + s + s * n
        nic_node = nic0 + i
        pairs = [  # (x, y) of block pair 2k (x -> y) and 2k+1 (y -> x), given i within the block
            (i, hub0 + i // g),                                       # GPU - hub
            (i, nic0 + (i // g) * n + (i % g) * n // g),              # GPU - its NIC
            (nic_node, hub0 + i // n),                                # NIC - hub
            (nic_node, sw0 + self._switch_of(i // n, i % n)),         # NIC - network switch
            (sw0 + i, np.full_like(i, sw0 + w)),                      # switch - spine
        ]
        src, dst = np.empty_like(links), np.empty_like(links)
        for k, (x, y) in enumerate(pairs):
            for b, (a_, b_) in ((2 * k, (x, y)), (2 * k + 1, (y, x))):
                sel = block == b
                src[sel], dst[sel] = np.broadcast_to(a_, i.shape)[sel], np.broadcast_to(b_, i.shape)[sel]
        sel = block == 10   # GPU -> GPU of a cube-mesh server: i = server*G*G + local_a*G + local_b
        src[sel] = (i // (g * g) * g + i // g % g)[sel]
        dst[sel] = (i // (g * g) * g + i % g)[sel]
        return src, dst

    def link_name(self, link: int) -> Edge:
        """The (from, to) node names of directed link id `link`."""
        hit = self._names.get(link)
        return hit if hit is not None else self._edge_names([link])[link]

    def _edge_names(self, ids: list[int]) -> dict[int, Edge]:
        """The name cache, holding every link of `ids`: one (from, to) tuple per link, shared by
        every route through it (few objects for the garbage collector to track)."""
        names = self._names
        missing = set(ids).difference(names)
        if missing:
            new = sorted(missing)
            a, b = self._ends_of(np.array(new, dtype=np.int64))
            node = self.node_name
            names.update(zip(new, zip(map(node, a.tolist()), map(node, b.tolist()), strict=True), strict=True))
        return names

    def route_edges(self, src: np.ndarray, dst: np.ndarray) -> tuple[Edge, ...]:
        """The named hops of flows src[i] -> dst[i], flow after flow, each in hop order."""
        r = self.routes(src, dst)
        ids = r[r >= 0].tolist()
        return tuple(map(self._edge_names(ids).__getitem__, ids))

    def hops(self, src: np.ndarray, dst: np.ndarray) -> Hops:
        """`route_edges(src, dst)`, named on first use."""
        src, dst = np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64)
        return Hops(lambda: self.route_edges(src, dst))


class Hops(Sequence[Edge]):
    """The named hops of a set of flows, computed by `make()` on first use (`RouteTable.hops`): equal
    to (and hashing as) the tuple of those hops; pickles as that tuple."""

    __slots__ = ("_make", "_edges")

    def __init__(self, make: Callable[[], tuple[Edge, ...]]) -> None:
        self._make = make
        self._edges: tuple[Edge, ...] | None = None

    def _get(self) -> tuple[Edge, ...]:
        edges = self._edges
        if edges is None:  # threads racing here compute the same tuple
            edges = self._edges = self._make()
        return edges

    def __len__(self) -> int:
        return len(self._get())

    def __getitem__(self, i: Any) -> Any:
        return self._get()[i]

    def __iter__(self) -> Iterator[Edge]:
        return iter(self._get())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hops):
            other = other._get()
        return self._get() == other if isinstance(other, tuple) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._get())

    def __repr__(self) -> str:
        return repr(self._get())

    def __reduce__(self) -> tuple[Any, ...]:
        return tuple, (self._get(),)
