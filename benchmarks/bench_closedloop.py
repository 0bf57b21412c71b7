"""Closed loop (issue 6): held-out error of the constants fitted on vTrain's A100 measurements.

For three random 70/30 splits, fit on 70 % and report the mean |error| on the held-out 30 %, before
(the documented defaults with vTrain's no-bucketing setting) and after the fit. The local
predicted-vs-measured sweep is a CLI run, not a benchmark: `paraplan validate --local` (docs/VALIDATION.md).

    python -m benchmarks closedloop"""

from __future__ import annotations

import time

from costmodel.calibrate import VTRAIN_FIT_NAMES, calibrate
from costmodel.fit_data import vtrain_observations
from costmodel.published.validate import VALIDATION_EFFICIENCY

SEEDS = (0, 1, 2)


def main() -> None:
    obs = vtrain_observations()
    if not obs:
        print("closedloop: vTrain data not found (../shared/data/vtrain); skipped")
        return
    for seed in SEEDS:
        t0 = time.perf_counter()
        fit, profile = calibrate(
            obs,
            names=VTRAIN_FIT_NAMES,
            efficiency=VALIDATION_EFFICIENCY,
            test_fraction=0.3,
            seed=seed,
            max_evals=200,
            max_fit_rows=300,
            source="vtrain",
        )
        print(
            f"vTrain seed {seed}: {len(obs)} runs, held-out {fit.after_test.n}: mean |error| "
            f"{fit.before_test.mean_abs:.1%} -> {fit.after_test.mean_abs:.1%} (max {fit.after_test.max_abs:.1%}); "
            f"fit part {fit.before_fit.mean_abs:.1%} -> {fit.after_fit.mean_abs:.1%}; "
            f"{fit.evaluations} evaluations, {time.perf_counter() - t0:.0f} s"
        )
        print("   constants: " + ", ".join(f"{k}={v:.3g}" for k, v in sorted(profile.constants.items())))


if __name__ == "__main__":
    main()
