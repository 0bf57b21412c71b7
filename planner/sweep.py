"""What-if sweeps: the best plan as one input varies (cluster size, GPU type, inter-node bandwidth,
global batch, sequence length), one `search` per point, as a DataFrame."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from costmodel import get_gpu
from costmodel.network.units import parse_bandwidth
from costmodel.specs import ClusterSpec, GPUSpec, ModelSpec, TrainingSpec, format_validation_error

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
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"values: {what} must be integers, got {value!r}") from None
    if out != float(value) or out < 1:
        raise ValueError(f"values: {what} must be positive integers, got {value!r}")
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


def sweep(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, *, vary: str,
          values: Iterable[Any], calibration: Any = None, topology: Any = None,
          **constraints: Any) -> pd.DataFrame:
    """The best plan per value of `vary` as a DataFrame: one row per point, the varied value, every knob
    and figure of the best plan (NaN/empty when nothing fits), and `message` saying why not.

    `vary` is one of `VARIABLES`; `constraints` are `search`'s keyword constraints."""
    if vary not in VARIABLES:
        raise ValueError(f"vary={vary!r}: must be one of {', '.join(VARIABLES)}")
    values = list(values)
    if not values:
        raise ValueError("values: give at least one value to sweep over")
    rows = []
    for value in values:
        m, c, t = VARIABLES[vary](model, cluster, training, value)
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
