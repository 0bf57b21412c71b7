"""Leave-one-source-out (LOSO) error: how well the fitted constants carry to a publication they never saw.

For each source (publication) S: the cost model's fitted constants (`LOSO_NAMES`, the `EfficiencyModel`
fields the defaults were tuned on) are fitted on every other source, by Nelder-Mead on their bounded box
(`costmodel.calibration.fit.minimize_unit_box`) minimising the mean over those sources of each source's
mean |step-time error| (so a source with 1,440 rows weighs as much as one with 3); S is then scored with
them. What a stack states (costmodel/data/stacks) and the hardware data are not fitted, so they stay as
they are in every fold. The in-sample column scores the shipped defaults; the all-sources column fits
on everything (the best the constants can do on these rows).

Every prediction is the real `costmodel.estimate`; large sources are subsampled for the fit only
(`max_rows_per_source`, a seeded even stride), never for the scores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ...layer.compute import EfficiencyModel
from ...step.estimate import estimate
from ..fit import minimize_unit_box
from ..fit_space import UnitBox, start_values
from .data import Case
from .validate import VALIDATION_EFFICIENCY

__all__ = ["LOSO_NAMES", "LosoResult", "step_errors", "leave_one_source_out"]

LOSO_NAMES = ("gemm_max_efficiency", "gemm_half_dim", "attention_efficiency", "mem_efficiency", "host_op_s",
              "host_overlap_exponent", "collective_efficiency", "p2p_overhead_s")
"""The constants fitted in each fold: those `python -m costmodel.calibration.published.tune` tuned."""


@dataclass
class LosoResult:
    """Per source: rows, mean |step error| with the shipped defaults (in-sample for the sources they were
    tuned on), with constants fitted on all sources, and left out; the constants of each fold."""

    table: pd.DataFrame
    folds: dict[str, dict[str, float]]
    names: tuple[str, ...]


def step_errors(cases: list[Case], efficiency: EfficiencyModel) -> np.ndarray:
    """Step-time error of each case (a TFLOP/s row: published / predicted - 1); 1.0 where the
    estimate raises."""
    out = np.empty(len(cases))
    for i, c in enumerate(cases):
        try:
            est = estimate(c.model, c.cluster, c.training, c.plan, efficiency=efficiency)
        except ValueError:
            out[i] = 1.0
            continue
        if c.metric == "tflops_per_gpu":
            out[i] = c.published / est.hardware_tflops_per_gpu - 1
        else:
            out[i] = est.step_time_s / c.published - 1
    return out


def _by_source(cases: list[Case]) -> dict[str, list[Case]]:
    out: dict[str, list[Case]] = {}
    for c in cases:
        out.setdefault(c.origin or c.source, []).append(c)
    return out


def _subsample(rows: list[Case], limit: int) -> list[Case]:
    if len(rows) <= limit:
        return rows
    stride = int(np.ceil(len(rows) / limit))
    return rows[::stride]


def _fit(sources: dict[str, list[Case]], names: tuple[str, ...], base: EfficiencyModel, max_evals: int
         ) -> dict[str, float]:
    space = UnitBox(names)

    def loss(u: np.ndarray) -> float:
        eff = replace(base, **space.to_values(u))
        return float(np.mean([np.abs(step_errors(rows, eff)).mean() for rows in sources.values()]))

    start = space.to_unit(start_values(names, base))
    res = minimize_unit_box(loss, start, max_evals=max(1, max_evals * 2 // 3))
    again = minimize_unit_box(loss, res.x, step=0.05, max_evals=max(1, max_evals - res.nfev))
    best = again if again.fun <= res.fun else res
    return space.to_values(best.x)


def leave_one_source_out(cases: list[Case], *, names: tuple[str, ...] = LOSO_NAMES,
                         base: EfficiencyModel = VALIDATION_EFFICIENCY, max_evals: int = 120,
                         max_rows_per_source: int = 300, log: Callable[[str], None] | None = None) -> LosoResult:
    """The LOSO table of `cases` grouped by `Case.origin` (module docstring)."""
    groups = _by_source(cases)
    fit_rows = {src: _subsample(rows, max_rows_per_source) for src, rows in groups.items()}
    say = log or (lambda _msg: None)
    say(f"loso: fitting {', '.join(names)} on all {len(groups)} sources")
    everything = _fit(fit_rows, names, base, max_evals)
    folds: dict[str, dict[str, float]] = {}
    table = []
    for src, rows in groups.items():
        say(f"loso: leaving out {src} ({len(rows)} rows)")
        others = {k: v for k, v in fit_rows.items() if k != src}
        folds[src] = _fit(others, names, base, max_evals) if others else {}
        table.append({
            "source": src, "rows": len(rows),
            "defaults": float(np.abs(step_errors(rows, base)).mean()),
            "fit_all": float(np.abs(step_errors(rows, replace(base, **everything))).mean()),
            "left_out": float(np.abs(step_errors(rows, replace(base, **folds[src]))).mean()),
        })
    folds["(all sources)"] = everything
    return LosoResult(pd.DataFrame(table), folds, tuple(names))
