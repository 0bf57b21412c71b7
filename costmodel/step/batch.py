"""`estimate_batch`: the cost model on many plans at once (numpy), for the planner's search.

It runs the very code `estimate` runs (`costmodel.step.costs`), on arrays: one call per pipeline depth pp,
every other knob (dp, tp, cp, micro-batch, virtual stages, schedule, ZeRO stage, recomputation,
sequence parallelism) an array, and each row's collectives priced by the memoized CommModel of its
own (dp, tp, pp, cp) group through a `costmodel.network.comm_grouped.GroupedComm`. Results equal `estimate`
plan by plan for even stage splits with the default placement (tests/test_costmodel_batch.py,
tests/test_costmodel_batch_grouped.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..layer.compute import DEFAULT_EFFICIENCY, EfficiencyModel
from ..layer.flops import RECOMPUTE_CODES, step_flops
from ..layer.memory import SCHEDULE_CODES
from ..network.comm_grouped import GroupedComm
from ..specs import AXES, MEMORY_SAFETY_MARGIN, ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec
from .costs import Knobs, step_costs
from .estimate import comm_model, resolve_calibration, step_context

__all__ = ["estimate_batch", "BATCH_COLUMNS", "plan_columns"]

BATCH_COLUMNS = (
    "step_time_s", "tokens_per_s", "mfu", "hfu", "model_tflops_per_gpu", "hardware_tflops_per_gpu",
    "compute_s", "tp_comm_s", "cp_comm_s", "ep_comm_s", "dp_comm_s", "pp_comm_s", "bubble_s", "optimizer_s",
    "parameters_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes", "buffers_bytes",
    "temporaries_bytes", "allocated_bytes", "reserved_bytes", "context_bytes", "peak_bytes", "num_micro_batches",
    "fits", "valid",
)
_FROM_STEP = BATCH_COLUMNS[6:BATCH_COLUMNS.index("fits")]
"""The columns `step_costs` returns directly."""
_ALIASES = {"micro_batch_size": ("micro_batch_size", "mb", "micro_batch"),
            "virtual_stages": ("virtual_stages", "v"), "zero_stage": ("zero_stage", "zero"),
            "sequence_parallel": ("sequence_parallel", "sp")}
_DEFAULTS = {"dp": 1, "tp": 1, "pp": 1, "cp": 1, "ep": 1, "micro_batch_size": 1, "virtual_stages": 1,
             "schedule": "1f1b", "zero_stage": 0, "recompute": "none", "sequence_parallel": False}


def _column(plans: Mapping[str, Any], name: str, n: int | None) -> np.ndarray | None:
    for alias in _ALIASES.get(name, (name,)):
        if alias in plans:
            return np.asarray(plans[alias])
    return None


def _codes(values: np.ndarray, table: dict[str, int], field: str) -> np.ndarray:
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    uniq, inverse = np.unique(values.astype(str), return_inverse=True)
    bad = [u for u in uniq if u not in table]
    if bad:
        raise ValueError(f"{field}: unknown value(s) {bad}; use one of {', '.join(table)}")
    return np.array([table[u] for u in uniq], dtype=np.int64)[inverse.ravel()]


def plan_columns(plans: Any) -> dict[str, np.ndarray]:
    """Plans (DataFrame, dict of arrays, or a list of ParallelPlan) as int64 columns: dp, tp, pp, cp, ep,
    micro_batch_size, virtual_stages, schedule (code), zero_stage, recompute (code), sequence_parallel."""
    if isinstance(plans, (list, tuple)) and plans and isinstance(plans[0], ParallelPlan):
        for i, p in enumerate(plans):
            if not isinstance(p, ParallelPlan):
                raise ValueError(f"plans[{i}]: expected a ParallelPlan, got {type(p).__name__}")
            if p.layers_per_stage is not None or p.placement != AXES or p.cp_attention != "auto":
                raise ValueError(f"plans[{i}]: estimate_batch prices even stage splits in the default placement "
                                 "with the device's CP attention; use estimate() for a plan with layers_per_stage, "
                                 "another placement or cp_attention")
        plans = {f: np.array([getattr(p, f) for p in plans]) for f in _DEFAULTS}
    if hasattr(plans, "to_dict") and hasattr(plans, "columns"):
        plans = {c: plans[c].to_numpy() for c in plans.columns}
    if not isinstance(plans, Mapping):
        raise ValueError("plans: give a pandas DataFrame, a dict of arrays, or a list of ParallelPlan")
    cols = {name: _column(plans, name, None) for name in _DEFAULTS}
    sizes = {c.size for c in cols.values() if c is not None and c.ndim}
    if len(sizes) > 1:
        raise ValueError(f"plans: columns have different lengths {sorted(sizes)}")
    n = sizes.pop() if sizes else 1
    out: dict[str, np.ndarray] = {}
    for name, default in _DEFAULTS.items():
        col = cols[name]
        col = np.full(n, default) if col is None else np.broadcast_to(col, (n,))
        if name == "schedule":
            col = _codes(col, SCHEDULE_CODES, name)
        elif name == "recompute":
            col = _codes(col, RECOMPUTE_CODES, name)
        out[name] = np.asarray(col).astype(np.int64)
        if name not in ("schedule", "recompute", "sequence_parallel", "zero_stage") and (out[name] < 1).any():
            raise ValueError(f"{name}: every value must be >= 1 (got {out[name].min()})")
    return out


def _valid(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, c: dict[str, np.ndarray]) -> np.ndarray:
    """The rules of `costmodel.step.checks.plan_problems` and ParallelPlan's validators, vectorized."""
    dp, tp, pp, cp, mb, v = (c[k] for k in ("dp", "tp", "pp", "cp", "micro_batch_size", "virtual_stages"))
    sched, sp, zero = c["schedule"], c["sequence_parallel"], c["zero_stage"]
    B, s, layers = training.global_batch_size, training.seq_len, model.total_layers
    ep = c["ep"]
    ok = (model.num_heads % tp == 0) & (model.kv_heads % tp == 0) & (model.ffn_size % tp == 0)
    ok &= ((dp * cp) % ep == 0) & ((model.num_experts or 1) % ep == 0)   # ep > 1 only on an MoE model
    ok &= dp * tp * pp * cp <= cluster.num_gpus
    ok &= B % (dp * mb) == 0
    ok &= (s <= model.max_seq_len) & (s % cp == 0) & ((sp == 0) | ((s // cp) % tp == 0))
    ok &= (cp == 1) | (model.arch == "decoder")
    ok &= (pp * v <= layers) & (layers % (pp * v) == 0)
    inter = sched == SCHEDULE_CODES["interleaved-1f1b"]
    ok &= (v == 1) | inter
    ok &= ~inter | (pp > 1)
    m = B // np.maximum(dp * mb, 1)
    ok &= ~inter | (m % pp == 0)
    ok &= (sp == 0) | (tp > 1)
    ok &= (zero >= 0) & (zero <= 3) & (sched >= 0) & (sched <= 3) & (c["recompute"] >= 0) & (c["recompute"] <= 2)
    return ok


def estimate_batch(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, plans: Any, *,
                   calibration: Any = None, topology: Any = None,
                   efficiency: EfficiencyModel = DEFAULT_EFFICIENCY,
                   memory_margin: float = MEMORY_SAFETY_MARGIN) -> dict[str, np.ndarray]:
    """Estimate many plans at once; returns one array per name in BATCH_COLUMNS, row i for plan i.

    `plans`: DataFrame or dict of arrays with columns dp, tp, pp and optionally cp, ep, micro_batch_size
    (or mb), virtual_stages, schedule (name or code), zero_stage, recompute (name or code),
    sequence_parallel; missing columns take ParallelPlan's defaults. Rows that break a plan rule get
    valid=False and NaN figures (use `plan_problems` on one plan to learn why). `fits`: the peak is at most
    the GPU's memory less `memory_margin` (`StepEstimate.fits`)."""
    c = plan_columns(plans)
    n = c["dp"].size
    calibration = resolve_calibration(cluster, calibration)
    ctx = step_context(model, cluster, training, efficiency=efficiency, calibration=calibration)
    valid = _valid(model, cluster, training, c)
    out = {name: np.empty(n) for name in BATCH_COLUMNS}
    idx_valid = np.nonzero(valid)[0]
    if idx_valid.size:
        # one step_costs call per pipeline depth pp; dp/tp/cp per row, each row's collectives priced
        # by its own (dp, tp, pp, cp) CommModel through a GroupedComm
        placement = ParallelPlan().placement
        pp_valid = c["pp"][idx_valid]
        order = np.argsort(pp_valid, kind="stable")   # rows of a depth stay in ascending order
        bounds = np.flatnonzero(np.diff(pp_valid[order])) + 1
        for rows in np.split(idx_valid[order], bounds):
            pp = int(c["pp"][rows[0]])
            key = np.stack([c["dp"][rows], c["tp"][rows], c["cp"][rows], c["ep"][rows]], axis=1)   # up to 2^20 each
            uniq, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
            comms = [comm_model(cluster, ParallelPlan.model_construct(
                dp=int(c["dp"][rows[j]]), tp=int(c["tp"][rows[j]]), pp=pp, cp=int(c["cp"][rows[j]]),
                ep=int(c["ep"][rows[j]]), placement=placement), topology=topology, calibration=calibration) for j in first]
            k = Knobs(dp=c["dp"][rows], tp=c["tp"][rows], pp=pp, cp=c["cp"][rows], mb=c["micro_batch_size"][rows],
                      v=c["virtual_stages"][rows], schedule=c["schedule"][rows], zero=c["zero_stage"][rows],
                      recompute=c["recompute"][rows], sp=c["sequence_parallel"][rows], ep=c["ep"][rows])
            res = step_costs(ctx, k, GroupedComm(comms, inverse.ravel()))
            for name in _FROM_STEP:
                out[name][rows] = res[name]
            out["step_time_s"][rows] = res["step_time_s"]
        rc = np.clip(c["recompute"], 0, 2)
        gpus = c["dp"] * c["tp"] * c["pp"] * c["cp"]
        table = np.array([step_flops(ctx.shape, ctx.global_batch, ctx.seq_len, code) for code in (0, 1, 2)])
        model_flops, hw_flops = table[rc, 0], table[rc, 1]
        with np.errstate(all="ignore"):   # invalid rows hold garbage until they are set to NaN below
            per_gpu = out["step_time_s"] * gpus
            out["tokens_per_s"] = ctx.global_batch * ctx.seq_len / out["step_time_s"]
            out["model_tflops_per_gpu"] = model_flops / per_gpu / 1e12
            out["hardware_tflops_per_gpu"] = hw_flops / per_gpu / 1e12
            out["mfu"] = model_flops / per_gpu / ctx.peak_flops_per_s
            out["hfu"] = hw_flops / per_gpu / ctx.peak_flops_per_s
    invalid = ~valid
    if invalid.any():
        for name in BATCH_COLUMNS:
            out[name][invalid] = np.nan
    out["fits"] = valid & (np.nan_to_num(out["peak_bytes"], nan=np.inf) <= ctx.hbm_bytes * (1 - memory_margin))
    out["valid"] = valid
    return out
