"""Pareto fronts over arrays: the plans no other plan beats on both objectives (both minimized)."""

from __future__ import annotations

import numpy as np

__all__ = ["pareto_indices"]


def pareto_indices(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Indices of the Pareto-optimal points minimizing both arrays, sorted by `primary` ascending.

    Sort by (primary, secondary); a point is on the front iff its secondary value is strictly below
    every secondary value seen before it (Kung et al. 1975, two-objective case, O(n log n)). Of
    exact duplicates only the first (lowest index) is kept."""
    primary = np.asarray(primary, dtype=float)
    secondary = np.asarray(secondary, dtype=float)
    if primary.shape != secondary.shape or primary.ndim != 1:
        raise ValueError("primary and secondary must be 1-D arrays of the same length")
    if primary.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(primary.size), secondary, primary))
    sec = secondary[order]
    running = np.minimum.accumulate(sec)
    prev = np.concatenate([[np.inf], running[:-1]])
    return order[sec < prev]
