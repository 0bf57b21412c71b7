"""Pipeline-parallel schedules: simulation of one step, and closed forms for uniform stages.

Schedules: "gpipe", "1f1b" (PipeDream-flush), "interleaved-1f1b" (Narayanan et al. 2021, SC21) and
"zero-bubble" (ZB-H1, Qi et al. 2023). Per-rank op orders live in `pipeline_schedules`, the
dependency-driven simulator in `pipeline_sim`, the numpy closed forms in `pipeline_uniform`.

Usage::

    from costmodel.pipeline import simulate_pipeline, uniform_makespan_s, uniform_peak_in_flight

    res = simulate_pipeline(schedule="1f1b", pp=4, num_micro_batches=8,
                            fwd_s=[1.0, 1.0, 1.0, 1.2], bwd_s=[2.0, 2.0, 2.0, 2.4],
                            p2p_s=0.05, act_bytes=[3e9, 3e9, 3e9, 3e9], with_events=False)
    res.makespan_s, res.bubble_s, res.exposed_p2p_s, res.peak_act_bytes   # peak_act_bytes[0] = 4 * 3e9

    # the planner's bulk path: numpy arrays in, numpy arrays out (exact for uniform stages)
    t = uniform_makespan_s("1f1b", pp=np.array([2, 4, 8]), m=32, v=1, fwd_s=1.0, bwd_s=2.0, p2p_s=0.05)
    uniform_peak_in_flight("interleaved-1f1b", pp=4, m=8, v=2)   # 11 (micro-batch, chunk) pairs
"""

from __future__ import annotations

from .schedules import SCHEDULES, rank_orders
from .sim import PipelineResult, simulate_pipeline
from .uniform import (
    uniform_bubble_s,
    uniform_makespan_bounds_s,
    uniform_makespan_s,
    uniform_peak_in_flight,
)

__all__ = [
    "SCHEDULES", "PipelineResult", "rank_orders", "simulate_pipeline", "uniform_bubble_s",
    "uniform_makespan_bounds_s", "uniform_makespan_s", "uniform_peak_in_flight",
]
