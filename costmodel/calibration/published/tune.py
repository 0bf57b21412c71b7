"""How the EfficiencyModel defaults were chosen: a coordinate search over grids of the constants,
minimising, summed over the three published sets, mean |error| + 0.25 * max |error|.

Run: `python -m costmodel.calibration.published.tune [rounds]` (several minutes; vTrain single-node uses every
third row). It prints the best constants; they were copied into `EfficiencyModel`'s defaults. The
reported errors are therefore in-sample (the shared data README calls these calibration sets)."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np

from ...layer.compute import EfficiencyModel
from ...step.estimate import estimate
from .data import Case, find_data_dir, megatron_table1_cases, vtrain_cases
from .validate import VALIDATION_EFFICIENCY

__all__ = ["GRID", "score", "coordinate_search"]

GRID: dict[str, list[float]] = {
    "host_overlap_exponent": [2, 3, 4, 6, 10, 50],
    "host_op_s": [3e-5, 4e-5, 5e-5, 6e-5, 7e-5],
    "host_hides_comm": [0.0, 0.25, 0.5, 0.75, 1.0],
    "elementwise_kernels_per_layer": [4, 6, 8, 10, 14],
    "gemm_max_efficiency": [0.7, 0.75, 0.8, 0.85, 0.9, 0.95],
    "gemm_half_dim": [16, 32, 48, 64, 96, 128],
    "mem_efficiency": [0.5, 0.6, 0.7, 0.8, 0.9],
    "collective_efficiency": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "p2p_overhead_s": [0, 1e-4, 3e-4, 1e-3, 2e-3],
    "step_overhead_s": [0, 0.005, 0.01, 0.02, 0.05],
    "kernel_overhead_s": [0, 2e-6, 5e-6, 1e-5],
}


def _errors(sets: dict[str, list[Case]], eff: EfficiencyModel) -> dict[str, np.ndarray]:
    out = {}
    for name, cases in sets.items():
        errs = []
        for c in cases:
            est = estimate(c.model, c.cluster, c.training, c.plan, efficiency=eff)
            pred = est.hardware_tflops_per_gpu if c.metric == "tflops_per_gpu" else est.step_time_s
            errs.append(pred / c.published - 1)
        out[name] = np.abs(np.array(errs))
    return out


def score(sets: dict[str, list[Case]], eff: EfficiencyModel) -> float:
    """Sum over sets of mean |error| + 0.25 max |error|."""
    return float(sum(e.mean() + 0.25 * e.max() for e in _errors(sets, eff).values()))


def coordinate_search(sets: dict[str, list[Case]], start: EfficiencyModel, *, rounds: int = 2) -> EfficiencyModel:
    """Try every grid value of one constant at a time, keep improvements, repeat `rounds` times."""
    best, best_score = start, score(sets, start)
    for _ in range(rounds):
        for name, values in GRID.items():
            for value in values:
                cand = replace(best, **{name: type(getattr(best, name))(value)})
                s = score(sets, cand)
                if s < best_score - 1e-4:
                    best, best_score = cand, s
            print(f"{name} = {getattr(best, name)}  score {best_score:.4f}", flush=True)
    return best


def main(argv: list[str]) -> int:
    data = find_data_dir()
    sets = {"single": vtrain_cases(data, which="single")[::3], "multi": vtrain_cases(data, which="multi"),
            "megatron": megatron_table1_cases(data)}
    best = coordinate_search(sets, VALIDATION_EFFICIENCY, rounds=int(argv[0]) if argv else 2)
    print({name: getattr(best, name) for name in GRID})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
