"""Predict every published run with ONE set of constants and report the error per set.

Error of a row: predicted / published - 1 (TFLOP/s per GPU for Megatron-LM's tables, step time
elsewhere); `step_error` is the step-time error of every row. Per set: mean and max of |error|. No
per-row tuning: every row uses `VALIDATION_EFFICIENCY` (the defaults with the gradient all-reduce after
the backward pass, as the 2021 Megatron-LM and vTrain runs did) under the stack its source ran; a stack
states its own overlap (costmodel.stacks)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from ...layer.compute import DEFAULT_EFFICIENCY, EfficiencyModel
from ...layer.params import total_params
from ...step.estimate import estimate
from .data import ASSUMPTIONS, Case, find_data_dir, megatron_table1_cases, vtrain_cases
from .h200 import h200_cases
from .mosaicml import mosaicml_cases
from .table2 import megatron_table2_cases

__all__ = ["VALIDATION_EFFICIENCY", "SETS", "ValidationResult", "all_cases", "predict_case", "run_validation",
           "summary_text"]

VALIDATION_EFFICIENCY = replace(DEFAULT_EFFICIENCY, overlap_grad_reduce=False)
"""The defaults, with the DP all-reduce after backward (Megatron-LM 2021; vTrain: no bucketing)."""

SETS = ("megatron2021", "megatron2021-ptd", "megatron2021-zero3", "vtrain-multi", "vtrain-single", "mosaicml-fsdp",
        "h200-executor")
"""Every public set paraplan ships (costmodel/calibration/published/sources/), in report order."""


def all_cases(data_dir: Path) -> tuple[list[Case], list[str]]:
    """(every priced case of every shipped set found in `data_dir`, rows that cannot be priced with why)."""
    cases: list[Case] = []
    skipped: list[str] = []
    if (data_dir / "megatron2021" / "runs.csv").is_file():
        cases += megatron_table1_cases(data_dir) + megatron_table2_cases(data_dir)
    for which in ("multi", "single"):
        if (data_dir / "vtrain" / f"ground_truth_{which}.csv").is_file():
            cases += vtrain_cases(data_dir, which=which)
    if (data_dir / "mosaicml" / "runs.csv").is_file():
        more, skip = mosaicml_cases(data_dir)
        cases += more
        skipped += [f"mosaicml-fsdp: {s}" for s in skip]
    if (data_dir / "h200_executor" / "runs.csv").is_file():
        cases += h200_cases(data_dir)
    return cases, skipped


@dataclass
class ValidationResult:
    """Per-row predictions (`rows`) and per-set error summary (`summary`)."""

    data_dir: Path | None
    rows: pd.DataFrame
    summary: pd.DataFrame
    efficiency: EfficiencyModel = field(default=VALIDATION_EFFICIENCY)
    skipped: tuple[str, ...] = ()


def predict_case(case: Case, *, efficiency: EfficiencyModel = VALIDATION_EFFICIENCY) -> dict:
    """The estimate of one case as a row: plan, predicted, published, error and the breakdown."""
    est = estimate(case.model, case.cluster, case.training, case.plan, efficiency=efficiency)
    pred = est.hardware_tflops_per_gpu if case.metric == "tflops_per_gpu" else est.step_time_s
    t = est.time
    # step-time error on every row (a TFLOP/s row's published step time is its FLOPs at that rate)
    step_error = case.published / pred - 1 if case.metric == "tflops_per_gpu" else pred / case.published - 1
    return {
        "set": case.source, "origin": case.origin, "stack": est.stack, "label": case.label, "model": case.model.name,
        "gpus": case.plan.world_size, "cluster": case.cluster.name, "gpu": case.cluster.gpu.name,
        "params": float(total_params(case.model)),
        "plan": est.plan.short(), "global_batch": case.training.global_batch_size, "metric": case.metric,
        "published": case.published, "predicted": pred, "error": pred / case.published - 1,
        "step_error": step_error,
        "step_time_s": est.step_time_s, "compute_s": t.compute_s, "tp_comm_s": t.tp_comm_s,
        "dp_comm_s": t.dp_comm_s, "pp_comm_s": t.pp_comm_s, "bubble_s": t.bubble_s,
        "optimizer_s": t.optimizer_s, "peak_gib": est.memory.peak_bytes / 2**30, "fits": est.fits,
    }


def _summary(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for name in SETS:
        sub = rows[rows["set"] == name]
        if sub.empty:
            continue
        err = sub["error"].abs()
        step = sub["step_error"] if "step_error" in sub else sub["error"]
        out.append({"set": name, "stack": sub["stack"].iloc[0] if "stack" in sub else "", "rows": len(sub),
                    "mean_abs_error": err.mean(), "max_abs_error": err.max(),
                    "mean_signed_error": sub["error"].mean(), "within_10pct": (err < 0.10).mean(),
                    "step_mean_abs_error": step.abs().mean()})
    return pd.DataFrame(out)


def run_validation(data_dir: str | Path | None = None, *,
                   efficiency: EfficiencyModel = VALIDATION_EFFICIENCY) -> ValidationResult:
    """Predict every published run found in `data_dir` (default: the copy shipped with paraplan)."""
    found = find_data_dir(data_dir)
    cases, skipped = all_cases(found)
    rows = pd.DataFrame([predict_case(c, efficiency=efficiency) for c in cases])
    if rows.empty:
        rows = pd.DataFrame(columns=["set", "label", "published", "predicted", "error"])
    return ValidationResult(found, rows, _summary(rows), efficiency, tuple(skipped))


def summary_text(result: ValidationResult) -> str:
    """One line per set: rows, mean and max absolute error."""
    if result.summary.empty:
        return f"no published runs found in {result.data_dir} (expected megatron2021/ and vtrain/ there)"
    lines = [f"published runs from {result.data_dir}:"]
    for r in result.summary.itertuples():
        lines.append(f"  {r.set:<18} {getattr(r, 'stack', ''):<9} {r.rows:5d} rows  mean |error| {r.mean_abs_error:6.1%}  "
                     f"max |error| {r.max_abs_error:6.1%}  mean signed {r.mean_signed_error:+6.1%}  "
                     f"within 10%: {r.within_10pct:6.1%}")
    if result.skipped:
        lines.append(f"  not priced: {len(result.skipped)} rows (docs/VALIDATION.md lists them)")
    return "\n".join(lines)


_ = ASSUMPTIONS
