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
    """Naming methods of `RouteTable` (they read its sizes, `hub`, `rails`, `mesh`, `_switch_of`
    and `routes`; the table's constructor sets `_node_names`, `_link_ends` and `_names`)."""

    @property
    def node_names(self) -> list[str]:
        """Names of the nodes links join, numbered: GPUs (S*G), server hubs (S), NICs (S*N), network
        switches (W), the spine."""
        if self._node_names is None:
            s, g, n = self.num_servers, self.gpus_per_node, self.nics_per_node
            self._node_names = ([f"n{i}/gpu{j}" for i in range(s) for j in range(g)]
                                + [f"n{i}/{self.hub}" for i in range(s)]
                                + [f"n{i}/nic{k}" for i in range(s) for k in range(n)]
                                + [f"rail{w}" if self.rails else f"leaf{w}" for w in range(self.num_switches)]
                                + ["spine"])
        return self._node_names

    def _ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Node numbers (see `node_names`) of every link's two ends, (from, to), indexed by link id."""
        if self._link_ends is None:
            s, g, n, w = self.num_servers, self.gpus_per_node, self.nics_per_node, self.num_switches
            gpu = np.arange(s * g)
            hub_of_gpu = s * g + gpu // g
            nic = np.arange(s * n)
            nic_node = s * g + s + nic
            nic_of_gpu = s * g + s + (gpu // g) * n + (gpu % g) * n // g
            switch = s * g + s + s * n + self._switch_of(nic // n, nic % n)
            net = s * g + s + s * n + np.arange(w)
            spine = np.full(w, s * g + s + s * n + w)
            pairs = [(gpu, hub_of_gpu), (gpu, nic_of_gpu), (nic_node, s * g + nic // n), (nic_node, switch),
                     (net, spine)]
            src = [a for x, y in pairs for a in (x, y)]  # even blocks run x -> y, odd ones y -> x
            dst = [b for x, y in pairs for b in (y, x)]
            if self.mesh is not None:  # GPU -> GPU, id s*G*G + i*G + j
                pair = np.arange(s * g * g)
                src.append(pair // (g * g) * g + pair // g % g)
                dst.append(pair // (g * g) * g + pair % g)
            self._link_ends = np.concatenate(src), np.concatenate(dst)
        return self._link_ends

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
            new = list(missing)
            a, b = self._ends()
            nodes = self.node_names
            names.update(zip(new, zip(map(nodes.__getitem__, a[new].tolist()),
                                      map(nodes.__getitem__, b[new].tolist()), strict=True), strict=True))
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
