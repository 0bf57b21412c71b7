"""What-if sweeps: the best plan as one input varies (cluster size, GPU type, inter-node bandwidth,
global batch, sequence length), one `search` per point, as a DataFrame."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from costmodel import get_gpu
from costmodel.network.units import parse_bandwidth
from costmodel.specs import ClusterSpec, GPUSpec, ModelSpec, TrainingSpec, format_validation_error
from costmodel.specs.limits import shown

from .result import COLUMNS, plan_row
from .search import search

__all__ = ["sweep", "VARIABLES"]


def _cluster(cluster: ClusterSpec, **update: Any) -> ClusterSpec:
    try:
        return ClusterSpec.model_validate({**cluster.model_dump(), **update})
    except ValidationError as exc:
        raise ValueError(f"values: {format_validation_error(exc)}") from None


def _training(training: TrainingSpec, **update: Any) -> TrainingSpec:
    try:
        return TrainingSpec.model_validate({**training.model_dump(), **update})
    except ValidationError as exc:
        raise ValueError(f"values: {format_validation_error(exc)}") from None


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"values: {what} must be positive integers, got {value!r}")
    try:
        out = int(value)
        exact = out == float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"values: {what} must be integers, got {shown(value)}") from None
    if not exact or out < 1:
        raise ValueError(f"values: {what} must be positive integers, got {shown(value)}")
    return out


def _nodes(m: ModelSpec, c: ClusterSpec, t: TrainingSpec, v: Any) -> tuple:
    return m, _cluster(c, num_nodes=_int(v, "node counts")), t


def _gpu(m: ModelSpec, c: ClusterSpec, t: TrainingSpec, v: Any) -> tuple:
    gpu = v if isinstance(v, GPUSpec) else get_gpu(str(v))
    return m, _cluster(c, gpu=gpu), t


def _bw(m: ModelSpec, c: ClusterSpec, t: TrainingSpec, v: Any) -> tuple:
    bw = parse_bandwidth(v, what="inter-node bandwidth")
    link = c.inter_node_link.model_copy(update={"bw_bytes_per_s": bw, "name": f"{c.inter_node_link.name}@{v}"})
    return m, _cluster(c, inter_node_link=link), t


def _batch(m: ModelSpec, c: ClusterSpec, t: TrainingSpec, v: Any) -> tuple:
    return m, c, _training(t, global_batch_size=_int(v, "global batches"))


def _seq(m: ModelSpec, c: ClusterSpec, t: TrainingSpec, v: Any) -> tuple:
    return m, c, _training(t, seq_len=_int(v, "sequence lengths"))


VARIABLES: dict[str, Callable[[ModelSpec, ClusterSpec, TrainingSpec, Any], tuple]] = {
    "nodes": _nodes, "gpu": _gpu, "inter_node_bw": _bw, "global_batch": _batch, "seq_len": _seq,
}
"""What `sweep` can vary: node count, GPU type (catalog name or GPUSpec), inter-node NIC bandwidth
(bytes/s or text such as '400Gbps'), global batch (sequences), sequence length."""


MAX_POINTS = 64
"""Values one sweep takes (each runs a whole search)."""


def sweep(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, *, vary: str,
          values: Iterable[Any], calibration: Any = None, topology: Any = None,
          global_batch_per_gpu: int | None = None, **constraints: Any) -> pd.DataFrame:
    """The best plan per value of `vary` as a DataFrame: one row per point, the varied value, every knob
    and figure of the best plan (NaN/empty when nothing fits), and `message` saying why not.

    `vary` is one of `VARIABLES`; `constraints` are `search`'s keyword constraints. With
    `global_batch_per_gpu`, every point trains that many sequences per GPU of its cluster (weak
    scaling: the global batch grows with the nodes); without it every point keeps
    `training.global_batch_size` (strong scaling). The `global_batch_size` column says which ran."""
    if not isinstance(vary, str) or vary not in VARIABLES:
        raise ValueError(f"vary={shown(vary)}: must be one of {', '.join(VARIABLES)}")
    if isinstance(values, (str, bytes)):
        values = values.split(",") if isinstance(values, str) else [values]
    values = list(itertools.islice(values, MAX_POINTS + 1))
    if not values:
        raise ValueError("values: give at least one value to sweep over")
    if len(values) > MAX_POINTS:
        raise ValueError(f"values: at most {MAX_POINTS} points per sweep (each runs a whole search)")
    if global_batch_per_gpu is not None:
        if vary == "global_batch":
            raise ValueError("global_batch_per_gpu: cannot be combined with vary='global_batch'")
        _int(global_batch_per_gpu, "global_batch_per_gpu")
    rows = []
    for value in values:
        m, c, t = VARIABLES[vary](model, cluster, training, value)
        if global_batch_per_gpu is not None:
            t = _training(t, global_batch_size=global_batch_per_gpu * c.num_gpus)
        result = search(m, c, t, top_k=1, calibration=calibration, topology=topology, **constraints)
        row: dict[str, Any] = {vary: value if not isinstance(value, GPUSpec) else value.name,
                               "cluster_gpus": c.num_gpus, "global_batch_size": t.global_batch_size,
                               "seq_len": t.seq_len}
        if result.best is not None:
            row.update(plan_row(result.best.estimate))
        else:
            row.update({k: np.nan for k in COLUMNS})
        row["num_valid"] = result.num_valid
        row["num_fit"] = result.num_fit
        row["search_s"] = result.elapsed_s
        row["message"] = result.message
        rows.append(row)
    return pd.DataFrame(rows)
