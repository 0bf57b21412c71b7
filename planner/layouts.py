"""The balanced split the exact scorer prices for each candidate whose layer split may change
(`split_layouts`), as block counts per rank (`Layout`), for the bounds of `planner.bounds`; and
`unique_rows`, the distinct rows of small-integer key columns. The split depends only on (pp, v,
recompute, micro-batch), so it is derived once per distinct key and memoized per (model, training)."""

from __future__ import annotations

import numpy as np

from costmodel.layer.params import model_shape
from costmodel.specs import ModelSpec, ParallelPlan, TrainingSpec

from .balance import balanced_split
from .constraints import RECOMPUTES
from .space import Space

__all__ = ["Layout", "unique_rows", "split_layouts"]

Layout = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(encoder blocks per rank, decoder blocks per rank, encoder blocks of chunk-0 stage j, decoder
blocks of chunk-0 stage j), each of length pp; chunk-0 stage j lives on rank j."""


def unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(keys, axis=0, return_inverse=True)` for small non-negative integer columns, via one
    mixed-radix integer per row (same sorted rows and inverse, without the slow row sort)."""
    keys = np.asarray(keys, dtype=np.int64)
    if keys.shape[0] == 0:
        return keys.reshape(0, keys.shape[1]), np.zeros(0, dtype=np.int64)
    code = np.zeros(keys.shape[0], dtype=np.int64)
    for j in range(keys.shape[1]):
        code = code * (int(keys[:, j].max()) + 1) + keys[:, j]
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    return keys[first], inverse.ravel()


def _layout(split: tuple[int, ...], pp: int, n_enc: int, n_dec: int) -> Layout:
    """Per-rank and chunk-0 encoder/decoder block counts of a split (decoder blocks after n_enc, as
    `costmodel.estimate`'s simulator path counts them)."""
    layers = n_enc + n_dec
    counts = np.asarray(split, dtype=float)
    start = np.concatenate([[0.0], np.cumsum(counts)[:-1]])
    nd = np.clip(np.minimum(start + counts, layers) - np.maximum(start, n_enc), 0, None) if n_dec else 0 * counts
    ne = counts - nd
    return ne.reshape(-1, pp).sum(axis=0), nd.reshape(-1, pp).sum(axis=0), ne[:pp], nd[:pp]


_MEMO: dict[tuple[int, int], tuple[tuple, dict]] = {}


def _memo(model: ModelSpec, training: TrainingSpec) -> dict:
    """The balanced splits' figures already derived for (model, training) (specs are frozen; the
    entry keeps them alive so their ids stay theirs)."""
    hit = _MEMO.get((id(model), id(training)))
    if hit is None or hit[0][0] is not model or hit[0][1] is not training:
        if len(_MEMO) > 64:
            _MEMO.clear()
        hit = _MEMO[(id(model), id(training))] = ((model, training), {})
    return hit[1]


def split_layouts(model: ModelSpec, training: TrainingSpec, space: Space | dict[str, np.ndarray],
                  rebalance: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[tuple, Layout]]:
    """(changed, mu_first, mu_last, layouts) per candidate of `space` (a Space or its columns).

    `changed`: the exact scorer may use the balanced split instead of the closed form's even (or,
    layers not dividing, fractional) one. `mu_first`, `mu_last`: blocks on the first/last rank of
    the balanced split over the fractional share (capped at 1). `layouts[(pp, v, recompute, mb)]`:
    the balanced split's `Layout`, for every key of a changed candidate."""
    c = space.columns if isinstance(space, Space) else space
    n = c["pp"].shape[0]
    changed = np.zeros(n, dtype=bool)
    mu0, mul = np.ones(n), np.ones(n)
    layouts: dict[tuple, Layout] = {}
    layers = model.total_layers
    stages = c["pp"] * c["v"]
    maybe = (layers % stages != 0) | (rebalance & (stages > 1))
    if not maybe.any():
        return changed, mu0, mul, layouts
    n_dec = model_shape(model).n_dec
    keys = np.stack([c["pp"], c["v"], c["recompute"], c["mb"]], axis=1)
    uniq, inverse = unique_rows(keys[maybe])
    vals = np.ones((len(uniq), 3))
    memo = _memo(model, training)
    for j, key in enumerate(map(tuple, uniq.tolist())):
        hit = memo.get(key)
        if hit is None:
            pp, v, rc, mb = key
            plan = ParallelPlan(pp=pp, virtual_stages=v, schedule="interleaved-1f1b" if v > 1 else "1f1b",
                                recompute=RECOMPUTES[rc], micro_batch_size=mb)
            split = balanced_split(model, training, plan)
            if layers % (pp * v) == 0 and split == plan.stage_layers(layers):
                hit = memo[key] = ((0, 1, 1), None)
            else:
                share = layers / pp
                n0, nl = sum(split[0::pp]), sum(split[pp - 1::pp])
                hit = memo[key] = ((1, min(1.0, n0 / share), min(1.0, nl / share)),
                                   _layout(split, pp, layers - n_dec, n_dec))
        vals[j] = hit[0]
        if hit[1] is not None:
            layouts[key] = hit[1]
    idx = np.flatnonzero(maybe)
    changed[idx] = vals[inverse, 0] > 0
    mu0[idx], mul[idx] = vals[inverse, 1], vals[inverse, 2]
    return changed, mu0, mul, layouts
