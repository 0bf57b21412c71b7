"""A small derivative-free minimiser for the constant fit: Nelder-Mead on the unit box.

Nelder & Mead 1965, "A simplex method for function minimization" (Comput. J. 7(4)), with the standard
coefficients (reflection 1, expansion 2, contraction 1/2, shrink 1/2) of Lagarias et al. 1998 (SIAM J.
Optim. 9(1)), sec. 2. Points are clipped to [0, 1]^d, so callers map bounded parameters onto the box."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["MinimizeResult", "nelder_mead"]


@dataclass(frozen=True)
class MinimizeResult:
    """Best point found, its value and the number of function evaluations spent."""

    x: np.ndarray
    value: float
    evaluations: int


def nelder_mead(
    fn: Callable[[np.ndarray], float],
    x0: np.ndarray,
    *,
    step: float = 0.15,
    max_evals: int = 200,
    tol: float = 1e-5,
) -> MinimizeResult:
    """Minimise `fn` over [0, 1]^d from `x0`; stops after `max_evals` calls or when the simplex's
    values differ by less than `tol`."""
    x0 = np.clip(np.asarray(x0, dtype=float), 0.0, 1.0)
    d = x0.size
    if d == 0:
        return MinimizeResult(x0, float(fn(x0)), 1)
    evals = 0

    def f(x: np.ndarray) -> float:
        nonlocal evals
        evals += 1
        value = float(fn(np.clip(x, 0.0, 1.0)))
        return value if np.isfinite(value) else float("inf")

    simplex = [x0]
    for i in range(d):
        x = x0.copy()
        x[i] = x[i] + step if x[i] + step <= 1.0 else x[i] - step
        simplex.append(x)
    values = [f(x) for x in simplex]
    while evals < max_evals:
        order = np.argsort(values)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if values[-1] - values[0] < tol:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        worst = simplex[-1]
        xr = np.clip(centroid + (centroid - worst), 0.0, 1.0)
        fr = f(xr)
        if fr < values[0]:
            xe = np.clip(centroid + 2.0 * (centroid - worst), 0.0, 1.0)
            fe = f(xe)
            simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
            continue
        if fr < values[-2]:
            simplex[-1], values[-1] = xr, fr
            continue
        outside = fr < values[-1]
        xc = centroid + 0.5 * ((xr if outside else worst) - centroid)
        fc = f(xc)
        if fc < (fr if outside else values[-1]):
            simplex[-1], values[-1] = xc, fc
            continue
        best = simplex[0]
        simplex = [best] + [best + 0.5 * (x - best) for x in simplex[1:]]
        values = [values[0]] + [f(x) for x in simplex[1:]]
    i = int(np.argmin(values))
    return MinimizeResult(np.clip(simplex[i], 0.0, 1.0), float(values[i]), evals)
