"""Planner search speed (`python -m benchmarks planner`): whole searches over the full default
space, cold (first search on a fresh cluster object: topology graph and every CommModel built) and
warm (the same search again: CommModels memoized by the cost model), in wall time and in CPU time of
this process (`time.process_time`, robust to a shared machine), with the load average; and the bulk
pass's plans per second: wall time inside the search, and the median CPU time of 7 warm bulk passes
alone (`planner.scoring.bulk_scores` on the same space), with the size of the table it prices
(`planner.scoring.zero_table`: ZeRO stages x columns). Results: docs/BENCHMARKS.md (planner section)."""

from __future__ import annotations

import os
import statistics
import time

from costmodel import TrainingSpec, get_cluster, load_model
from planner import search
from planner.constraints import Constraints
from planner.scoring import bulk_scores, zero_table
from planner.space import build_space

CASES = [
    # (label, model, cluster, nodes, global batch, seq len, constraints)
    ("GPT-3 175B, 1,024 A100 (full space)", "gpt3-175b", "dgx-a100", 128, 1536, 2048, {}),
    ("Llama-3 405B, 16,384 H100 (full space)", "llama3-405b", "dgx-h100", 2048, 2048, 8192, {}),
    ("DeepSeek-V3 (MoE, ep searched), 2,048 H100 (full space)", "deepseek-v3", "dgx-h100", 256, 8192, 4096, {}),
]


def _run(model, cluster, training, cons):  # noqa: ANN001, ANN202
    t0, c0 = time.perf_counter(), time.process_time()
    result = search(model, cluster, training, top_k=10, **cons)
    return time.perf_counter() - t0, time.process_time() - c0, result


def bulk_cpu_s(model, cluster, training, cons, repeats: int = 7) -> tuple[float, int, str]:  # noqa: ANN001
    """(median CPU seconds of one warm bulk pass, valid candidates, the table's shape) over `repeats`
    passes."""
    space = build_space(model, cluster, training, Constraints.from_kwargs(**cons))
    first, _, zeros, _ = zero_table(space)
    bulk_scores(model, cluster, training, space)
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        bulk_scores(model, cluster, training, space)
        times.append(time.process_time() - c0)
    return statistics.median(times), len(space), f"{zeros.size} ZeRO stages x {first.size:,} columns"


def main() -> None:
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    for label, name, preset, nodes, batch, seq, cons in CASES:
        model, cluster = load_model(name), get_cluster(preset, nodes=nodes)
        training = TrainingSpec(global_batch_size=batch, seq_len=seq)
        cold_s, cold_cpu, cold = _run(model, cluster, training, cons)
        warm_s, warm_cpu, warm = _run(model, cluster, training, cons)
        assert [r.plan for r in cold.plans] == [r.plan for r in warm.plans]
        t = warm.timings_s
        print(f"{label}: cold {cold_s:.2f} s wall / {cold_cpu:.2f} s CPU, warm {warm_s:.2f} s wall / "
              f"{warm_cpu:.2f} s CPU; {cold.num_candidates:,} candidates, {cold.num_valid:,} valid, "
              f"{cold.num_rescored} re-scored exactly (load {os.getloadavg()[0]:.1f})")
        print(f"   warm: space {t['space_s']:.2f} s, bulk {t['bulk_s']:.2f} s "
              f"({warm.bulk_plans_per_s:,.0f} plans/s wall), re-score {t['rescore_s']:.2f} s, "
              f"pareto {t['pareto_s']:.2f} s; cold bulk {cold.timings_s['bulk_s']:.2f} s")
        bulk_s, valid, table = bulk_cpu_s(model, cluster, training, cons)
        print(f"   bulk pass alone (warm, median of 7): {bulk_s:.3f} s CPU, {valid / bulk_s:,.0f} plans/s CPU "
              f"(load {os.getloadavg()[0]:.1f}; table {table})")
        if cold.best is not None:
            e = cold.best.estimate
            print(f"   best: {cold.best.plan.short()} step {e.step_time_s:.2f} s, MFU {e.mfu:.1%}, "
                  f"peak {e.memory.peak_bytes / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
