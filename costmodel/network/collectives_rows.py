"""`costmodel.network.collectives` over many groups at once: a `LinkTable` holds each GroupLink's constants
of the alpha-beta formulas as arrays, so one numpy expression prices a collective for rows that sit
on different groups (the planner's bulk pass, `costmodel.network.comm_grouped.GroupedComm`), instead of one
call per GroupLink.

The formulas are `collectives.py`'s (the same `ring_terms` / `tree_terms` constants), in the same order, so every row gets the very
float `collective_time_s` returns (tests/test_costmodel_batch_grouped.py checks equality on every
GroupLink of several clusters and topologies):
- ring all-reduce 2(n-1)/n * B/bw + 2(n-1) alpha; ring reduce-scatter / all-gather (n-1)/n * B/bw +
  (n-1) alpha (Thakur, Rabenseifner & Gropp 2005, sec. 4);
- double binary tree all-reduce 2 B/bw + 2 ceil(log2 n) alpha (Sanders, Speck & Traeff 2009);
- hierarchical: reduce-scatter inside each server (k ranks), the B/k shard across the m servers
  (all-reduce: the cheaper of ring and tree; reduce-scatter / all-gather: ring), all-gather inside;
- send/recv alpha + B/bw; pairwise all-to-all (n-1) alpha + the slower of the in-server share
  (k-1)/n * B and the off-server share (n-k)/n * B over their bandwidths ((n-1)/n * B over the
  flat bandwidth inside one server); the cheapest algorithm per row (NCCL's tuner).
A one-rank stage costs 0: its coefficients are 0 (0 * B / bw + 0 = 0 exactly), and an algorithm
a group lacks has latency +inf, so `np.minimum` never picks it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .collectives import ring_terms, tree_terms
from .placement import GroupLink

__all__ = ["LinkTable", "link_table", "VECTOR_OPS"]

VECTOR_OPS = ("all_reduce", "reduce_scatter", "all_gather", "send_recv", "all_to_all")
"""Collectives a LinkTable prices."""


_TABLES: dict[tuple[int, ...], tuple[tuple[GroupLink, ...], LinkTable]] = {}


def link_table(links: Sequence[GroupLink]) -> LinkTable:
    """The LinkTable of `links`, memoized on the links' identities (GroupLinks are frozen and shared
    by every CommModel of a topology's placement cache; the entry keeps them alive)."""
    key = tuple(map(id, links))
    hit = _TABLES.get(key)
    if hit is None or any(a is not b for a, b in zip(hit[0], links, strict=True)):
        if len(_TABLES) > 256:
            _TABLES.clear()
        hit = _TABLES[key] = (tuple(links), LinkTable(links))
    return hit[1]


class LinkTable:
    """The formula constants of GroupLinks `links` (index j = link j) as arrays; `time_s(op, code,
    nbytes)` prices row i on link code[i] (code -1: a one-rank group, 0 s)."""

    _FIELDS = ("ar", "ar_lat", "rs", "rs_lat", "tr", "tr_lat", "bw", "lat", "p2p_bw", "hier", "k", "in_c",
               "in_lat", "in_bw", "x_ar", "x_ar_lat", "x_rs", "x_rs_lat", "x_tr", "x_tr_lat", "x_bw",
               "a2a_in", "a2a_in_bw", "a2a_x", "a2a_x_bw", "a2a_lat")

    def __init__(self, links: Sequence[GroupLink]) -> None:
        # the last entry is a one-rank group (code -1): every term 0, no hierarchical algorithm
        one_rank = dict(ar=0.0, ar_lat=0.0, rs=0.0, rs_lat=0.0, tr=0.0, tr_lat=0.0, bw=1.0, lat=0.0,
                        p2p_bw=math.inf, hier=0.0, k=1.0, in_c=0.0, in_lat=math.inf, in_bw=1.0, x_ar=0.0,
                        x_ar_lat=0.0, x_rs=0.0, x_rs_lat=0.0, x_tr=0.0, x_tr_lat=0.0, x_bw=1.0,
                        a2a_in=0.0, a2a_in_bw=1.0, a2a_x=0.0, a2a_x_bw=1.0, a2a_lat=0.0)
        rows = [self._constants(g) if g.size > 1 else one_rank for g in links] + [one_rank]
        for name in self._FIELDS:
            setattr(self, name, np.array([r[name] for r in rows], dtype=float))
        self.any_hier = bool(self.hier.any())

    @staticmethod
    def _constants(g: GroupLink) -> dict[str, float]:
        """The formula constants of one GroupLink of more than one rank."""
        c = dict(bw=g.bw_bytes_per_s, lat=g.latency_s, p2p_bw=g.bw_bytes_per_s)
        n, k = g.size, g.ranks_per_server   # pairwise all-to-all (collectives.all_to_all_time_s)
        c["a2a_lat"] = (n - 1) * g.latency_s
        if g.crosses_nodes:
            c.update(a2a_in=(k - 1) / n, a2a_in_bw=g.intra.bw_bytes_per_s if g.intra else g.bw_bytes_per_s,
                     a2a_x=(n - k) / n, a2a_x_bw=g.inter.bw_bytes_per_s if g.inter else g.bw_bytes_per_s)
        else:
            c.update(a2a_in=(n - 1) / n, a2a_in_bw=g.bw_bytes_per_s, a2a_x=0.0, a2a_x_bw=1.0)
        c["ar"], c["ar_lat"] = ring_terms(g.size, g.latency_s, all_reduce=True)
        c["rs"], c["rs_lat"] = ring_terms(g.size, g.latency_s, all_reduce=False)
        c["tr"], c["tr_lat"] = tree_terms(g.size, g.latency_s)
        if g.intra is None or g.inter is None:   # no hierarchical algorithm: never the cheapest
            c.update(hier=0.0, k=1.0, in_c=0.0, in_lat=math.inf, in_bw=1.0, x_ar=0.0, x_ar_lat=0.0, x_rs=0.0,
                     x_rs_lat=0.0, x_tr=0.0, x_tr_lat=0.0, x_bw=1.0)
            return c
        k, m, x_lat = g.ranks_per_server, g.num_servers, g.inter.latency_s
        c.update(hier=1.0, k=float(k), in_bw=g.intra.bw_bytes_per_s, x_bw=g.inter.bw_bytes_per_s)
        c["in_c"], c["in_lat"] = ring_terms(k, g.intra.latency_s, all_reduce=False)
        c["x_ar"], c["x_ar_lat"] = ring_terms(m, x_lat, all_reduce=True)
        c["x_rs"], c["x_rs_lat"] = ring_terms(m, x_lat, all_reduce=False)
        c["x_tr"], c["x_tr_lat"] = tree_terms(m, x_lat)
        return c

    def rows(self, code: np.ndarray) -> _Rows:
        """The constants of rows on links `code` (-1: one rank), each gathered on first use and kept:
        price several collectives on the same rows with one `_Rows`."""
        return _Rows(self, code)

    def time_s(self, op: str, code: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """Seconds of one `op` (in `VECTOR_OPS`) of `nbytes` (full buffer, one per row) on each row's
        link `code[i]` (-1: one rank)."""
        return self.rows(code).time_s(op, nbytes)


class _Rows:
    """A LinkTable's constants at rows `code`, gathered lazily (attribute = the table's field)."""

    def __init__(self, table: LinkTable, code: np.ndarray) -> None:
        self._table, self._code = table, code
        self._hier: bool | None = None

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self._table, name)[self._code]
        setattr(self, name, value)
        return value

    def time_s(self, op: str, nbytes: np.ndarray) -> np.ndarray:
        """Seconds of one `op` of `nbytes` (one per row) on each row's link."""
        b = np.asarray(nbytes, dtype=float)
        if op == "send_recv":
            return self.lat + b / self.p2p_bw
        if op == "all_to_all":
            return np.maximum(self.a2a_in * b / self.a2a_in_bw, self.a2a_x * b / self.a2a_x_bw) + self.a2a_lat
        if op == "all_reduce":
            best = np.minimum(self.ar * b / self.bw + self.ar_lat, self.tr * b / self.bw + self.tr_lat)
        elif op in ("reduce_scatter", "all_gather"):
            best = self.rs * b / self.bw + self.rs_lat
        else:
            raise ValueError(f"op {op!r} is not one of {VECTOR_OPS}")
        if self._hier is None:
            self._hier = self._table.any_hier and bool(self.hier.any())
        if not self._hier:
            return best
        rs_in = self.in_c * b / self.in_bw + self.in_lat
        shard = b / self.k
        if op == "all_reduce":
            across = np.minimum(self.x_ar * shard / self.x_bw + self.x_ar_lat,
                                self.x_tr * shard / self.x_bw + self.x_tr_lat)
            return np.minimum(best, 2 * rs_in + across)
        return np.minimum(best, rs_in + (self.x_rs * shard / self.x_bw + self.x_rs_lat))
