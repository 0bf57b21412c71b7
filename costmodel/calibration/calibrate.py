"""`paraplan calibrate`: fit the cost model's constants to measurements and save them as a profile.

    result, profile = calibrate(observations, profile=measured_or_None, names=None, test_fraction=0.3)
    save_profile(profile, "calib.json")        # estimate(..., calibration=load_profile("calib.json"))

The saved constants are complete relative to the documented defaults: a field the fit started from
with a non-default value (e.g. `overlap_grad_reduce=False` for vTrain, whose runs do not bucket
gradients) is stored too, so `estimate(..., calibration=profile)` reproduces the fitted predictions."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..layer.compute import DEFAULT_EFFICIENCY, EfficiencyModel
from .fit import DEFAULT_FIT_NAMES, FitResult, Observation, fit_constants
from .fit_data import fitted_profile
from .profile_spec import CalibrationProfile

__all__ = ["calibrate", "default_fit_names", "efficiency_overrides", "VTRAIN_FIT_NAMES"]

VTRAIN_FIT_NAMES = DEFAULT_FIT_NAMES + (
    "mem_efficiency",
    "p2p_overhead_s",
    "host_hides_comm",
    "host_overlap_exponent",
)
"""vTrain: no measured curves, so compute and memory efficiencies are fitted along with overheads."""


def default_fit_names(profile: CalibrationProfile | None) -> tuple[str, ...]:
    """Constants to fit: with a measured profile, its rates and collective curves stand and what it
    cannot measure is fitted (per-op host time, per-step cost); without one, the efficiencies too."""
    if profile is not None and (profile.gemm or profile.attention):
        return ("host_op_s", "step_overhead_s")
    return DEFAULT_FIT_NAMES


def efficiency_overrides(
    efficiency: EfficiencyModel, *, base: EfficiencyModel = DEFAULT_EFFICIENCY
) -> dict[str, float]:
    """Fields of `efficiency` that differ from `base`, as constants."""
    return {
        f.name: float(getattr(efficiency, f.name))
        for f in fields(EfficiencyModel)
        if getattr(efficiency, f.name) != getattr(base, f.name)
    }


def calibrate(
    observations: list[Observation],
    *,
    profile: CalibrationProfile | None = None,
    names: tuple[str, ...] | None = None,
    efficiency: EfficiencyModel = DEFAULT_EFFICIENCY,
    test_fraction: float = 0.3,
    seed: int = 0,
    max_evals: int = 200,
    max_fit_rows: int = 300,
    source: str = "",
    gpu: str | None = None,
) -> tuple[FitResult, CalibrationProfile]:
    """Fit `names` (default: `default_fit_names(profile)`) starting from `efficiency` + the profile's
    constants; return the fit and the profile to save (the measured curves of `profile`, if any, plus
    the constants)."""
    names = names or default_fit_names(profile)
    result = fit_constants(
        observations,
        names=names,
        efficiency=efficiency,
        calibration=profile,
        test_fraction=test_fraction,
        seed=seed,
        max_evals=max_evals,
        max_fit_rows=max_fit_rows,
    )
    constants = {**efficiency_overrides(efficiency), **result.constants}
    info: dict[str, Any] = {
        "source": source,
        "observations": len(observations),
        "test_fraction": test_fraction,
        "seed": seed,
        **result.summary(),
    }
    gpu = gpu or (observations[0].cluster.gpu.name if observations else None)
    saved = fitted_profile(
        constants, base=profile, device=gpu or "", gpu=gpu if profile is None else None, fit=info
    )
    return result, saved
