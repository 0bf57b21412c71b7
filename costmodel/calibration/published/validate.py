"""Predict every published run with ONE set of constants and report the error per set.

Error of a row: predicted / published - 1 (TFLOP/s per GPU for Megatron-LM, iteration time for
vTrain). Per set: mean and max of |error|. No per-row tuning: every row uses `VALIDATION_EFFICIENCY`,
the default EfficiencyModel with the gradient all-reduce after the backward pass (both sources)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from ...layer.compute import DEFAULT_EFFICIENCY, EfficiencyModel
from ...step.estimate import estimate
from .data import ASSUMPTIONS, Case, find_data_dir, megatron_table1_cases, vtrain_cases

__all__ = ["VALIDATION_EFFICIENCY", "ValidationResult", "predict_case", "run_validation", "summary_text"]

VALIDATION_EFFICIENCY = replace(DEFAULT_EFFICIENCY, overlap_grad_reduce=False)
"""The defaults, with the DP all-reduce after backward (Megatron-LM 2021; vTrain: no bucketing)."""

SETS = ("megatron2021", "vtrain-multi", "vtrain-single")


@dataclass
class ValidationResult:
    """Per-row predictions (`rows`) and per-set error summary (`summary`)."""

    data_dir: Path | None
    rows: pd.DataFrame
    summary: pd.DataFrame
    efficiency: EfficiencyModel = field(default=VALIDATION_EFFICIENCY)


def predict_case(case: Case, *, efficiency: EfficiencyModel = VALIDATION_EFFICIENCY) -> dict:
    """The estimate of one case as a row: plan, predicted, published, error and the breakdown."""
    est = estimate(case.model, case.cluster, case.training, case.plan, efficiency=efficiency)
    pred = est.hardware_tflops_per_gpu if case.metric == "tflops_per_gpu" else est.step_time_s
    t = est.time
    return {
        "set": case.source, "label": case.label, "model": case.model.name, "gpus": case.plan.world_size,
        "plan": case.plan.short(), "global_batch": case.training.global_batch_size, "metric": case.metric,
        "published": case.published, "predicted": pred, "error": pred / case.published - 1,
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
        out.append({"set": name, "rows": len(sub), "mean_abs_error": err.mean(), "max_abs_error": err.max(),
                    "mean_signed_error": sub["error"].mean(), "within_10pct": (err < 0.10).mean()})
    return pd.DataFrame(out)


def run_validation(data_dir: str | Path | None = None, *,
                   efficiency: EfficiencyModel = VALIDATION_EFFICIENCY) -> ValidationResult:
    """Predict every published run found in `data_dir` (default: the copy shipped with paraplan)."""
    found = find_data_dir(data_dir)
    cases: list[Case] = []
    if (found / "megatron2021" / "runs.csv").is_file():
        cases += megatron_table1_cases(found)
    for which in ("multi", "single"):
        if (found / "vtrain" / f"ground_truth_{which}.csv").is_file():
            cases += vtrain_cases(found, which=which)
    rows = pd.DataFrame([predict_case(c, efficiency=efficiency) for c in cases])
    if rows.empty:
        rows = pd.DataFrame(columns=["set", "label", "published", "predicted", "error"])
    return ValidationResult(found, rows, _summary(rows), efficiency)


def summary_text(result: ValidationResult) -> str:
    """One line per set: rows, mean and max absolute error."""
    if result.summary.empty:
        return f"no published runs found in {result.data_dir} (expected megatron2021/ and vtrain/ there)"
    lines = [f"published runs from {result.data_dir}:"]
    for r in result.summary.itertuples():
        lines.append(f"  {r.set:<14} {r.rows:5d} rows  mean |error| {r.mean_abs_error:6.1%}  "
                     f"max |error| {r.max_abs_error:6.1%}  mean signed {r.mean_signed_error:+6.1%}  "
                     f"within 10%: {r.within_10pct:6.1%}")
    return "\n".join(lines)


_ = ASSUMPTIONS
