"""The closed loop's report: per-plan rows and summary, written as validation.csv and summary.json,
and the derived columns (per-repeat summaries, leave-one-out calibrated peak memory)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from costmodel.step.report import write_text_atomic

from .metrics import summarize_validation

__all__ = ["PLAN_KNOBS", "CSV_COLUMNS", "ValidationReport", "per_repeat_summaries", "cv_peak_bytes"]

PLAN_KNOBS = ("dp", "tp", "pp", "cp", "cp_attention", "micro_batch_size", "schedule", "virtual_stages",
              "zero_stage", "recompute", "sequence_parallel")
"""The plan fields that get a column of their own in the validation CSV."""

CSV_COLUMNS = (
    "plan",
    "measured_step_time_s",
    "predicted_step_time_s",
    "step_time_error",
    "cv_predicted_step_time_s",
    "cv_step_time_error",
    "speed_ratio",
    "speed_predicted_step_time_s",
    "speed_step_time_error",
    "measured_peak_bytes",
    "predicted_peak_bytes",
    "peak_error",
    "cv_predicted_peak_bytes",
    "cv_peak_error",
    "measured_tensor_peak_bytes",
    "tensor_peak_error",
    "predicted_rank",
    "measured_rank",
    "planner_rank",
    "planner_top1",
    "measured_min_s",
    "measured_max_s",
    "measured_runs_s",
    "runs",
    "measured_cpu_s",
    "measured_cpu_bound_s",
    "cpu_bound_error",
    "load_avg_min",
    "load_avg_max",
    *PLAN_KNOBS,
    "layers_per_stage",
    "status",
    "run_dir",
)


@dataclass
class ValidationReport:
    """Per-plan rows (`CSV_COLUMNS` and more) and the summary figures."""

    rows: pd.DataFrame
    summary: dict[str, Any]
    constants: dict[str, float] = field(default_factory=dict)

    def write(self, out_dir: str | os.PathLike[str]) -> Path:
        """validation.csv and summary.json in `out_dir` (atomically); returns the CSV path."""
        out = Path(out_dir)
        cols = [c for c in CSV_COLUMNS if c in self.rows] + [c for c in self.rows if c not in CSV_COLUMNS]
        csv_path = out / "validation.csv"
        write_text_atomic(csv_path, self.rows[cols].to_csv(index=False))
        write_text_atomic(
            out / "summary.json",
            json.dumps({"summary": _jsonable(self.summary), "a_priori_constants": self.constants}, indent=2),
        )
        return csv_path


def per_repeat_summaries(df: pd.DataFrame, repeats: int) -> list[dict[str, Any]]:
    """The a-priori summary figures once per repeat (measured = that repeat's run of every plan):
    their min-max is the machine noise of the whole sweep."""
    out = []
    runs = df["measured_runs_s"].fillna("").str.split(";")
    for r in range(repeats):
        one = df.copy()
        one["measured_step_time_s"] = [float(x[r]) if len(x) > r and x[r] else math.nan for x in runs]
        one["cv_predicted_step_time_s"] = math.nan
        figures = summarize_validation(one)
        out.append(
            {
                k: figures[k]
                for k in ("step_time_mean_abs_error", "step_time_max_abs_error", "spearman", "regret")
            }
        )
    return out


def cv_peak_bytes(df: pd.DataFrame) -> pd.Series:
    """Leave-one-out calibrated peak: the prediction plus the median (measured - predicted) of the
    other plans - the per-process bytes the tensor model does not see (on CPU the resident-set rise
    also counts libtorch code pages, allocator caches and Gloo buffers), fitted as `framework_bytes`."""
    gap = df["measured_peak_bytes"] - df["predicted_peak_bytes"]
    out = pd.Series(math.nan, index=df.index)
    for i in df.index[gap.notna()]:
        others = gap.drop(index=i).dropna()
        if len(others):
            out[i] = df.at[i, "predicted_peak_bytes"] + float(others.median())
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value
