"""Scores of a closed-loop validation: relative error, rank correlation, planner regret.

- error = predicted / measured - 1 (signed); summaries use |error|.
- Spearman's rho: Pearson correlation of the average ranks (ties share the mean rank; Spearman 1904,
  "The proof and measurement of association between two things").
- regret = measured step time of the plan the planner ranks first / the best measured step time
  (1.0 = the planner's pick was the fastest plan that ran)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["rank_average", "spearman", "regret", "summarize_validation"]


def rank_average(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values` (smallest first), ties sharing their mean rank."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1, dtype=float)
    for v in np.unique(values):
        tie = values == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of paired values (NaN pairs dropped; NaN if < 2 pairs or constant)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2:
        return float("nan")
    ra, rb = rank_average(a[keep]), rank_average(b[keep])
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def regret(measured_s: np.ndarray, predicted_s: np.ndarray) -> float:
    """Measured time of the plan with the lowest prediction / lowest measured time (finite rows only)."""
    m, p = np.asarray(measured_s, dtype=float), np.asarray(predicted_s, dtype=float)
    keep = np.isfinite(m) & np.isfinite(p)
    if not keep.any():
        return float("nan")
    m, p = m[keep], p[keep]
    return float(m[int(np.argmin(p))] / m.min())


def _errors(rows: pd.DataFrame, pred: str, meas: str) -> tuple[float, float, int]:
    sub = rows[[pred, meas]].dropna()
    if sub.empty:
        return float("nan"), float("nan"), 0
    err = (sub[pred] / sub[meas] - 1).abs()
    return float(err.mean()), float(err.max()), len(sub)


def summarize_validation(rows: pd.DataFrame) -> dict[str, Any]:
    """Summary figures of a validation table with measured/predicted step time and peak columns (and
    optional `cv_predicted_step_time_s`, out-of-fold calibrated predictions)."""
    ran = rows[rows["measured_step_time_s"].notna()]
    mean_e, max_e, n = _errors(ran, "predicted_step_time_s", "measured_step_time_s")
    out: dict[str, Any] = {
        "plans_run": n,
        "plans_failed": int(rows["measured_step_time_s"].isna().sum()),
        "step_time_mean_abs_error": mean_e,
        "step_time_max_abs_error": max_e,
        "spearman": spearman(ran["predicted_step_time_s"], ran["measured_step_time_s"]),
        "regret": regret(ran["measured_step_time_s"], ran["predicted_step_time_s"]),
    }
    pk_mean, pk_max, _ = _errors(ran, "predicted_peak_bytes", "measured_peak_bytes")
    out["peak_mean_abs_error"], out["peak_max_abs_error"] = pk_mean, pk_max
    if "cv_predicted_peak_bytes" in ran and ran["cv_predicted_peak_bytes"].notna().any():
        out["cv_peak_mean_abs_error"], out["cv_peak_max_abs_error"], _ = _errors(
            ran, "cv_predicted_peak_bytes", "measured_peak_bytes"
        )
    if "measured_tensor_peak_bytes" in ran and ran["measured_tensor_peak_bytes"].notna().any():
        tensors = ran[ran["measured_tensor_peak_bytes"].notna()]
        out["tensor_peak_mean_abs_error"], out["tensor_peak_max_abs_error"], _ = _errors(
            tensors, "predicted_peak_bytes", "measured_tensor_peak_bytes"
        )
    if "measured_cpu_bound_s" in ran and ran["measured_cpu_bound_s"].notna().any():
        bound = ran[ran["measured_cpu_bound_s"].notna()]
        out["cpu_bound_mean_abs_error"], out["cpu_bound_max_abs_error"], _ = _errors(
            bound, "predicted_step_time_s", "measured_cpu_bound_s"
        )
        out["wall_over_cpu_bound_median"] = float((bound["measured_step_time_s"] / bound["measured_cpu_bound_s"]).median())
    if "speed_predicted_step_time_s" in ran and ran["speed_predicted_step_time_s"].notna().any():
        sp = ran[ran["speed_predicted_step_time_s"].notna()]
        out["speed_step_time_mean_abs_error"], out["speed_step_time_max_abs_error"], _ = _errors(
            sp, "speed_predicted_step_time_s", "measured_step_time_s")
        out["speed_spearman"] = spearman(sp["speed_predicted_step_time_s"], sp["measured_step_time_s"])
        out["speed_ratio_min"], out["speed_ratio_max"] = float(sp["speed_ratio"].min()), float(sp["speed_ratio"].max())
    if "cv_predicted_step_time_s" in ran and ran["cv_predicted_step_time_s"].notna().any():
        cv_mean, cv_max, _ = _errors(ran, "cv_predicted_step_time_s", "measured_step_time_s")
        out["cv_step_time_mean_abs_error"], out["cv_step_time_max_abs_error"] = cv_mean, cv_max
        out["cv_spearman"] = spearman(ran["cv_predicted_step_time_s"], ran["measured_step_time_s"])
        out["cv_regret"] = regret(ran["measured_step_time_s"], ran["cv_predicted_step_time_s"])
    if "planner_top1" in ran and ran["planner_top1"].any():
        top = ran[ran["planner_top1"]].iloc[0]
        best = ran.loc[ran["measured_step_time_s"].idxmin()]
        out["planner_top1_plan"], out["best_measured_plan"] = str(top["plan"]), str(best["plan"])
        out["planner_regret"] = float(top["measured_step_time_s"] / best["measured_step_time_s"])
    return out
