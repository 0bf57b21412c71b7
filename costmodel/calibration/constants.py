"""Fitted constants: overrides of the cost model's dimensionless constants carried by a calibration.

`paraplan calibrate` fits some `EfficiencyModel` fields (and one scale on measured compute rates) to
measured step times and stores them in `CalibrationProfile.constants`; `efficiency_with_constants` is
how the step model applies them (fields not named keep the caller's / documented default values).

`FITTABLE` lists what may be fitted, with the bounds the optimizer respects and whether the search
runs in log space. `MEASURED_RATE_SCALE` multiplies the profile's measured GEMM / attention /
streaming rates (e.g. 1/2 when 4 processes share 2 cores that the profile measured one at a time)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..layer.compute import EfficiencyModel

__all__ = [
    "MEASURED_RATE_SCALE",
    "Bound",
    "FITTABLE",
    "efficiency_with_constants",
    "check_constants",
    "measured_rate_scale",
]

MEASURED_RATE_SCALE = "measured_rate_scale"


@dataclass(frozen=True)
class Bound:
    """Search interval of one constant; `log` searches log(value) (positive scales and times)."""

    lo: float
    hi: float
    log: bool = False


FITTABLE: dict[str, Bound] = {
    "gemm_max_efficiency": Bound(0.2, 0.99),
    "gemm_half_dim": Bound(1.0, 1024.0, log=True),
    "attention_efficiency": Bound(0.05, 0.95),
    "mem_efficiency": Bound(0.1, 0.98),
    "kernel_overhead_s": Bound(1e-7, 1e-3, log=True),
    "host_op_s": Bound(1e-7, 1e-2, log=True),
    "host_hides_comm": Bound(0.0, 1.0),
    "host_overlap_exponent": Bound(1.0, 32.0, log=True),
    "collective_efficiency": Bound(0.02, 1.0, log=True),   # a share of the link model's bandwidth
    "p2p_overhead_s": Bound(1e-7, 1.0, log=True),
    "step_overhead_s": Bound(1e-6, 10.0, log=True),
    MEASURED_RATE_SCALE: Bound(0.01, 4.0, log=True),
}
"""Constants `paraplan calibrate` may fit, and the intervals it keeps them in."""

_BOOL_FIELDS = {"overlap_grad_reduce", "tp_overlap_with_sp", "overlap_param_gather", "zero3_regather_backward",
                "zero3_regather_recompute", "zero3_reduce_scatter_per_micro_batch", "zero3_nic_bound"}


def check_constants(constants: dict[str, Any]) -> dict[str, float]:
    """The constants as floats; ValueError naming an unknown or out-of-range entry."""
    known = {f.name for f in fields(EfficiencyModel)} | {MEASURED_RATE_SCALE}
    out: dict[str, float] = {}
    for key, value in constants.items():
        if key not in known:
            raise ValueError(f"constants.{key}: unknown constant; known: {', '.join(sorted(known))}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"constants.{key}={value!r}: must be a number") from None
        if number != number or (number < 0 and key not in _BOOL_FIELDS):
            raise ValueError(f"constants.{key}={value!r}: must be a non-negative number")
        out[key] = number
    return out


def efficiency_with_constants(efficiency: EfficiencyModel, calibration: Any) -> EfficiencyModel:
    """`efficiency` with the fields named in `calibration.constants` replaced (same object when the
    calibration carries none). Duck-typed: any object with a `constants` mapping."""
    constants = getattr(calibration, "constants", None)
    if not constants:
        return efficiency
    names = {f.name: f for f in fields(EfficiencyModel)}
    updates: dict[str, Any] = {}
    for key, value in constants.items():
        if key not in names:
            continue
        if key in _BOOL_FIELDS:
            updates[key] = bool(value)
        elif names[key].type in ("int", int):
            updates[key] = int(round(value))
        else:
            updates[key] = float(value)
    return replace(efficiency, **updates) if updates else efficiency


def measured_rate_scale(calibration: Any) -> float:
    """The factor on measured compute rates (1.0 when none was fitted)."""
    constants = getattr(calibration, "constants", None) or {}
    return float(constants.get(MEASURED_RATE_SCALE, 1.0))
