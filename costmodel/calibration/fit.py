"""Fit the cost model's efficiency and overlap constants to measured step times, with held-out scoring.

`fit_constants` splits the observations at random into a fit part and a held-out part (`test_fraction`),
minimises the mean |predicted / measured - 1| of the fit part over the chosen constants
(`costmodel.calibration.constants.FITTABLE`, Nelder-Mead on their bounded, log-scaled box; the boolean
`overlap_grad_reduce` is tried both ways when asked) and reports the error on both parts, before and
after. `cross_validated` gives every observation a prediction from constants fitted on the others
(k-fold; leave-one-out for small sets), the honest figure for a handful of local runs.

Every prediction is the real `costmodel.estimate`; nothing is scaled after the fact."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from ..layer.compute import DEFAULT_EFFICIENCY, EfficiencyModel
from ..specs import ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec
from ..step.estimate import estimate
from .constants import MEASURED_RATE_SCALE, efficiency_with_constants
from .fit_space import UnitBox, start_values

__all__ = [
    "minimize_unit_box",
    "Observation",
    "ErrorStats",
    "FitResult",
    "predict_step_times",
    "error_stats",
    "holdout_split",
    "fit_constants",
    "cross_validated",
    "DEFAULT_FIT_NAMES",
]

DEFAULT_FIT_NAMES = (
    "gemm_max_efficiency",
    "gemm_half_dim",
    "kernel_overhead_s",
    "host_op_s",
    "collective_efficiency",
    "step_overhead_s",
)
"""Constants fitted when none are named: compute efficiency and its fall-off, per-kernel and per-op
host overheads, the collective bandwidth factor and a fixed per-step cost."""


@dataclass(frozen=True)
class Observation:
    """One measured run: what to estimate and its measured step time (seconds)."""

    label: str
    model: ModelSpec
    cluster: ClusterSpec
    training: TrainingSpec
    plan: ParallelPlan
    step_time_s: float
    source: str = ""
    peak_bytes: float | None = None


@dataclass(frozen=True)
class ErrorStats:
    """|predicted / measured - 1| over `n` observations: mean and max; `signed` is the mean bias."""

    n: int
    mean_abs: float
    max_abs: float
    signed: float

    def text(self) -> str:
        return f"n={self.n} mean |err| {self.mean_abs:.1%} max {self.max_abs:.1%} bias {self.signed:+.1%}"


@dataclass
class FitResult:
    """Fitted constants and the error before/after on the fit and held-out parts (`rows`: one per
    observation with split, measured, predicted_before, predicted_after)."""

    constants: dict[str, float]
    names: tuple[str, ...]
    before_fit: ErrorStats
    after_fit: ErrorStats
    before_test: ErrorStats
    after_test: ErrorStats
    evaluations: int
    rows: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly record of the fit (stored in the calibration profile's `fit`)."""
        out: dict[str, Any] = {"names": list(self.names), "evaluations": self.evaluations}
        for key in ("before_fit", "after_fit", "before_test", "after_test"):
            s = getattr(self, key)
            out[key] = {"n": s.n, "mean_abs_error": s.mean_abs, "max_abs_error": s.max_abs, "bias": s.signed}
        return out


def predict_step_times(
    observations: list[Observation],
    *,
    efficiency: EfficiencyModel = DEFAULT_EFFICIENCY,
    calibration: Any = None,
) -> np.ndarray:
    """`estimate(...).step_time_s` of every observation (NaN where the estimate raises)."""
    out = np.full(len(observations), np.nan)
    for i, o in enumerate(observations):
        try:
            out[i] = estimate(
                o.model, o.cluster, o.training, o.plan, efficiency=efficiency, calibration=calibration
            ).step_time_s
        except ValueError:
            pass
    return out


def error_stats(predicted: np.ndarray, measured: np.ndarray) -> ErrorStats:
    """Relative error statistics; a NaN prediction counts as 100 % error."""
    if len(measured) == 0:
        return ErrorStats(0, float("nan"), float("nan"), float("nan"))
    err = np.asarray(predicted, dtype=float) / np.asarray(measured, dtype=float) - 1.0
    err = np.where(np.isfinite(err), err, 1.0)
    return ErrorStats(len(err), float(np.abs(err).mean()), float(np.abs(err).max()), float(err.mean()))


def holdout_split(n: int, *, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices): a seeded random permutation, at least one of each when n >= 2."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: use a fraction in [0, 1), e.g. 0.3")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _evaluator(observations: list[Observation], efficiency: EfficiencyModel, calibration: Any):
    """predict(constants) -> step times, with the constants applied to efficiency / calibration."""
    base_scale = float((getattr(calibration, "constants", None) or {}).get(MEASURED_RATE_SCALE, 1.0))
    plain_cal = (
        calibration.model_copy(update={"constants": {}})
        if getattr(calibration, "constants", None)
        else calibration
    )
    cals: dict[float, Any] = {}

    def predict(consts: dict[str, float]) -> np.ndarray:
        eff_kw = {k: v for k, v in consts.items() if k != MEASURED_RATE_SCALE}
        eff = replace(efficiency, **eff_kw) if eff_kw else efficiency
        cal = plain_cal
        scale = consts.get(MEASURED_RATE_SCALE, base_scale)
        if plain_cal is not None and scale != 1.0:
            cal = cals.get(scale)
            if cal is None:
                cal = cals[scale] = plain_cal.model_copy(update={"constants": {MEASURED_RATE_SCALE: scale}})
        return predict_step_times(observations, efficiency=eff, calibration=cal)

    return predict


def minimize_unit_box(fn: Any, x0: np.ndarray, *, step: float = 0.15, max_evals: int = 200,
                      tol: float = 1e-5) -> Any:
    """Nelder-Mead (Nelder & Mead 1965, standard coefficients of Lagarias et al. 1998) over [0, 1]^d with
    `scipy.optimize.minimize`: the initial simplex steps `step` along each axis (inwards at the upper
    edge), at most `max_evals` calls, stops when the simplex's values differ by less than `tol`; a
    non-finite value counts as +inf. Returns scipy's `OptimizeResult` (x, fun, nfev)."""
    x0 = np.clip(np.asarray(x0, dtype=float), 0.0, 1.0)
    simplex = [x0]
    for i in range(x0.size):
        x = x0.copy()
        x[i] = x[i] + step if x[i] + step <= 1.0 else x[i] - step
        simplex.append(x)

    def finite(x: np.ndarray) -> float:
        value = float(fn(np.clip(x, 0.0, 1.0)))
        return value if np.isfinite(value) else float("inf")

    res = minimize(finite, x0, method="Nelder-Mead", bounds=[(0.0, 1.0)] * x0.size,
                   options={"maxfev": max_evals, "fatol": tol, "xatol": np.inf, "initial_simplex": np.array(simplex)})
    res.x = np.clip(res.x, 0.0, 1.0)
    return res


def fit_constants(
    observations: list[Observation],
    *,
    names: tuple[str, ...] = DEFAULT_FIT_NAMES,
    efficiency: EfficiencyModel = DEFAULT_EFFICIENCY,
    calibration: Any = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    max_evals: int = 200,
    max_fit_rows: int = 300,
    try_overlap: bool = False,
) -> FitResult:
    """Fit `names` on a random (1 - test_fraction) part of `observations`, score on the rest.

    The starting point is `efficiency` with `calibration.constants` applied. At most `max_fit_rows`
    observations of the fit part (a seeded sample) drive the minimiser; the reported fit error uses
    the whole fit part. `try_overlap` also fits with `overlap_grad_reduce` flipped and keeps the better."""
    if not observations:
        raise ValueError("observations: nothing to fit; give measured runs (summary.json files) or --vtrain")
    names = tuple(dict.fromkeys(names))
    if MEASURED_RATE_SCALE in names and calibration is None:
        raise ValueError(f"{MEASURED_RATE_SCALE}: scales measured rates, so it needs a calibration profile")
    start_eff = efficiency_with_constants(efficiency, calibration)
    measured = np.array([o.step_time_s for o in observations])
    fit_idx, test_idx = holdout_split(len(observations), test_fraction=test_fraction, seed=seed)
    rng = np.random.default_rng(seed + 1)
    drive = np.sort(rng.choice(fit_idx, size=min(len(fit_idx), max_fit_rows), replace=False))
    space = UnitBox(names)
    base_scale = float((getattr(calibration, "constants", None) or {}).get(MEASURED_RATE_SCALE, 1.0))
    start = start_values(names, start_eff)
    if MEASURED_RATE_SCALE in names:
        start[MEASURED_RATE_SCALE] = base_scale
    best: tuple[float, dict[str, float], EfficiencyModel] | None = None
    evals = 0
    for overlap in (
        (start_eff.overlap_grad_reduce, not start_eff.overlap_grad_reduce)
        if try_overlap
        else (start_eff.overlap_grad_reduce,)
    ):
        eff = replace(start_eff, overlap_grad_reduce=overlap)
        predict = _evaluator([observations[i] for i in drive], eff, calibration)
        target = measured[drive]

        def loss(u: np.ndarray, predict=predict, target=target) -> float:
            return error_stats(predict(space.to_values(u)), target).mean_abs

        # two rounds: a restart from the best point with a fresh, smaller simplex escapes the
        # collapsed simplices Nelder-Mead is known for in more than a few dimensions (Lagarias 1998)
        res = minimize_unit_box(loss, space.to_unit(start), max_evals=max(1, max_evals * 2 // 3))
        again = minimize_unit_box(loss, res.x, step=0.05, max_evals=max(1, max_evals - res.nfev))
        evals += res.nfev + again.nfev
        res = again if again.fun <= res.fun else res
        if best is None or res.fun < best[0]:
            best = (float(res.fun), space.to_values(res.x), eff)
    assert best is not None
    _, values, eff = best
    constants = dict(values)
    if eff.overlap_grad_reduce != start_eff.overlap_grad_reduce or try_overlap:
        constants["overlap_grad_reduce"] = float(eff.overlap_grad_reduce)
    before = predict_step_times(observations, efficiency=start_eff, calibration=calibration)
    after = _evaluator(observations, eff, calibration)(values)
    rows = pd.DataFrame(
        {
            "label": [o.label for o in observations],
            "source": [o.source for o in observations],
            "plan": [o.plan.short() for o in observations],
            "split": "fit",
            "measured_step_time_s": measured,
            "predicted_before_s": before,
            "predicted_after_s": after,
        }
    )
    rows.loc[test_idx, "split"] = "held-out"
    rows["error_before"] = rows["predicted_before_s"] / measured - 1
    rows["error_after"] = rows["predicted_after_s"] / measured - 1
    return FitResult(
        constants=constants,
        names=names,
        before_fit=error_stats(before[fit_idx], measured[fit_idx]),
        after_fit=error_stats(after[fit_idx], measured[fit_idx]),
        before_test=error_stats(before[test_idx], measured[test_idx]),
        after_test=error_stats(after[test_idx], measured[test_idx]),
        evaluations=evals,
        rows=rows,
    )


def cross_validated(
    observations: list[Observation],
    *,
    names: tuple[str, ...] = DEFAULT_FIT_NAMES,
    efficiency: EfficiencyModel = DEFAULT_EFFICIENCY,
    calibration: Any = None,
    folds: int | None = None,
    seed: int = 0,
    max_evals: int = 120,
) -> np.ndarray:
    """Out-of-fold predictions: observation i is predicted with constants fitted on the folds without
    it (`folds` = None: leave-one-out). Needs at least 2 observations."""
    n = len(observations)
    if n < 2:
        raise ValueError(f"cross-validation needs at least 2 observations, got {n}")
    k = n if folds is None else max(2, min(folds, n))
    perm = np.random.default_rng(seed).permutation(n)
    out = np.full(n, np.nan)
    for f in range(k):
        held = perm[f::k]
        train = [observations[i] for i in range(n) if i not in set(held)]
        res = fit_constants(
            train,
            names=names,
            efficiency=efficiency,
            calibration=calibration,
            test_fraction=0.0,
            seed=seed,
            max_evals=max_evals,
        )
        fitted = _evaluator(
            [observations[i] for i in held], efficiency_with_constants(efficiency, calibration), calibration
        )
        eff_vals = {key: v for key, v in res.constants.items() if key != "overlap_grad_reduce"}
        out[held] = fitted(eff_vals)
    return out
