"""The search box of a constant fit: each named constant mapped onto [0, 1] within its
`costmodel.calibration.constants.FITTABLE` bounds (linearly, or in log space for scales and times), and the
starting point taken from an `EfficiencyModel`."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from ..layer.compute import EfficiencyModel
from .constants import FITTABLE

__all__ = ["UnitBox", "start_values"]


class UnitBox:
    """Maps the unit box onto the named constants (linear or log within their bounds)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        unknown = [n for n in names if n not in FITTABLE]
        if unknown:
            raise ValueError(f"constants {unknown}: not fittable; choose from {', '.join(FITTABLE)}")
        self.names = names
        self.bounds = [FITTABLE[n] for n in names]

    def to_values(self, u: np.ndarray) -> dict[str, float]:
        out = {}
        for name, b, x in zip(self.names, self.bounds, np.clip(u, 0, 1), strict=True):
            out[name] = float(
                np.exp(np.log(b.lo) + x * (np.log(b.hi) - np.log(b.lo)))
                if b.log
                else b.lo + x * (b.hi - b.lo)
            )
        return out

    def to_unit(self, values: dict[str, float]) -> np.ndarray:
        u = []
        for name, b in zip(self.names, self.bounds, strict=True):
            v = min(max(values[name], b.lo), b.hi)
            u.append(
                (np.log(v) - np.log(b.lo)) / (np.log(b.hi) - np.log(b.lo))
                if b.log
                else (v - b.lo) / (b.hi - b.lo)
            )
        return np.array(u)


def start_values(names: tuple[str, ...], efficiency: EfficiencyModel) -> dict[str, float]:
    """Starting values: the EfficiencyModel's (1.0 for the measured-rate scale); a zero log-scaled
    constant starts a quarter of the way up its (log) interval."""
    eff_fields = {f.name for f in fields(EfficiencyModel)}
    out = {}
    for n in names:
        value = float(getattr(efficiency, n)) if n in eff_fields else 1.0
        b = FITTABLE[n]
        out[n] = value if value > 0 else (b.lo * (b.hi / b.lo) ** 0.25 if b.log else b.lo)
    return out
