"""What a search returns: `SearchResult` (ranked plans with their exact `StepEstimate`s, Pareto fronts,
rejections by reason, the explanation when nothing fits) and its tabular views."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from costmodel.specs import ParallelPlan, StepEstimate

__all__ = ["RankedPlan", "SearchResult", "plan_row", "GIB", "COLUMNS"]

GIB = float(2 ** 30)


@dataclass(frozen=True)
class RankedPlan:
    """One plan of the result: its rank (1 = fastest), the cost model's exact estimate, and why the
    executor cannot run it on the cluster's device (`not_runnable`, 'field: ...'; None: it runs;
    the rules of `costmodel.step.runnable`)."""

    rank: int
    plan: ParallelPlan
    estimate: StepEstimate
    not_runnable: str | None = None
    """Why the executor cannot run this plan on the cluster's device (None: it can)."""
    equivalent: tuple[ParallelPlan, ...] = ()
    """Other placements of this plan with the same figures, folded into it (`planner.fold`)."""
    equivalent_note: str = ""
    """Why they change nothing (empty when there are none)."""

    @property
    def runnable(self) -> bool:
        """Whether `paraplan run` / the executor can train this plan on the cluster's device."""
        return self.not_runnable is None

    @property
    def label(self) -> str:
        """'#rank plan', e.g. '#1 dp8-tp8-pp16-mb1-1f1b-full'."""
        return f"#{self.rank} {self.plan.short()}"

    @property
    def step_time_s(self) -> float:
        return self.estimate.step_time_s

    @property
    def peak_bytes(self) -> float:
        return self.estimate.memory.peak_bytes


def plan_row(estimate: StepEstimate, *, equivalent: tuple[ParallelPlan, ...] = ()) -> dict[str, Any]:
    """One flat row: every knob of the plan and every figure of its estimate (and the placements of the
    equivalent plans folded into it)."""
    p, t, m = estimate.plan, estimate.time, estimate.memory
    return {
        "plan": p.short(), "num_gpus": estimate.num_gpus,
        "dp": p.dp, "tp": p.tp, "pp": p.pp, "cp": p.cp, "ep": p.ep, "micro_batch_size": p.micro_batch_size,
        "virtual_stages": p.virtual_stages, "schedule": p.schedule, "zero_stage": p.zero_stage,
        "cp_attention": p.cp_attention,
        "recompute": p.recompute, "sequence_parallel": p.sequence_parallel,
        "placement": "-".join(p.placement),
        "layers_per_stage": "" if p.layers_per_stage is None else ",".join(map(str, p.layers_per_stage)),
        "step_time_s": estimate.step_time_s, "tokens_per_s": estimate.tokens_per_s,
        "model_tflops_per_gpu": estimate.model_tflops_per_gpu,
        "hardware_tflops_per_gpu": estimate.hardware_tflops_per_gpu, "mfu": estimate.mfu, "hfu": estimate.hfu,
        "peak_bytes": m.peak_bytes, "peak_gib": m.peak_bytes / GIB, "capacity_bytes": estimate.capacity_bytes,
        "compute_s": t.compute_s, "tp_comm_s": t.tp_comm_s, "cp_comm_s": t.cp_comm_s, "ep_comm_s": t.ep_comm_s,
        "dp_comm_s": t.dp_comm_s, "pp_comm_s": t.pp_comm_s, "bubble_s": t.bubble_s,
        "optimizer_s": t.optimizer_s,
        "parameters_bytes": m.parameters_bytes, "gradients_bytes": m.gradients_bytes,
        "optimizer_bytes": m.optimizer_bytes, "activations_bytes": m.activations_bytes,
        "buffers_bytes": m.buffers_bytes, "stack": estimate.stack, "gpu_profile": estimate.gpu_profile or "",
        "equivalent": len(equivalent), "equivalent_placements": " ".join("-".join(e.placement) for e in equivalent),
    }


@dataclass(frozen=True)
class SearchResult:
    """Ranked plans (fastest first), Pareto fronts and the accounting of the search.

    `rejections` maps a reason (a rule label, or 'oom: does not fit in memory') to the number of
    candidate plans rejected for it. `message` explains an empty result with numbers. Plans that only
    differ in placement with the same figures are folded into the first (`RankedPlan.equivalent`,
    counted in `num_folded`; `planner.fold`) unless the search ran with `fold_equivalent=False`."""

    plans: tuple[RankedPlan, ...]
    pareto_memory: tuple[RankedPlan, ...] = ()
    pareto_gpus: tuple[RankedPlan, ...] = ()
    rejections: dict[str, int] = field(default_factory=dict)
    num_candidates: int = 0
    num_valid: int = 0
    num_fit: int = 0
    num_rescored: int = 0
    elapsed_s: float = 0.0
    message: str = ""
    complete: bool = True
    timings_s: dict[str, float] = field(default_factory=dict)
    num_folded: int = 0

    @property
    def best(self) -> RankedPlan | None:
        """The fastest plan that fits, or None when nothing fits (see `message`)."""
        return self.plans[0] if self.plans else None

    @property
    def plans_per_s(self) -> float:
        """Candidate plans considered per second of search (generated / elapsed)."""
        return self.num_candidates / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def bulk_plans_per_s(self) -> float:
        """Valid plans priced per second by the bulk (vectorized) pass."""
        bulk = self.timings_s.get("bulk_s", 0.0)
        return self.num_valid / bulk if bulk > 0 else 0.0

    def __len__(self) -> int:
        return len(self.plans)

    def __iter__(self):  # noqa: ANN204
        return iter(self.plans)

    def to_frame(self) -> pd.DataFrame:
        """One row per ranked plan, a column for every knob and every figure, its folded equivalent
        placements, and whether the executor runs it (`runnable`, `not_runnable`: the reason)."""
        rows = [{"rank": r.rank, **plan_row(r.estimate, equivalent=r.equivalent), **_runnable_cols(r)}
                for r in self.plans]
        return pd.DataFrame(rows, columns=["rank", *COLUMNS])

    def pareto_frame(self, against: str = "memory") -> pd.DataFrame:
        """The Pareto front of step time vs peak memory per GPU (`against="memory"`) or vs GPUs used."""
        if against not in ("memory", "gpus"):
            raise ValueError(f"against={against!r}: use 'memory' or 'gpus'")
        front = self.pareto_memory if against == "memory" else self.pareto_gpus
        return pd.DataFrame([{**plan_row(r.estimate, equivalent=r.equivalent), **_runnable_cols(r)} for r in front],
                            columns=COLUMNS)

    def rejections_frame(self) -> pd.DataFrame:
        """Rejected candidates by reason, most frequent first."""
        items = sorted(self.rejections.items(), key=lambda kv: (-kv[1], kv[0]))
        return pd.DataFrame(items, columns=["reason", "plans"])

    def summary(self) -> str:
        """A few lines: counts, timing, and the best plan or the reason nothing fits."""
        lines = [f"{self.num_candidates:,} candidate plans, {self.num_valid:,} valid, {self.num_fit:,} fit in "
                 f"memory; {self.num_rescored} re-scored exactly; {self.elapsed_s:.2f} s "
                 f"({self.plans_per_s:,.0f} plans/s)"]
        if self.best is not None:
            e = self.best.estimate
            lines.append(f"best: {self.best.plan.short()}  step {e.step_time_s:.3f} s, "
                         f"{e.tokens_per_s:,.0f} tokens/s, MFU {e.mfu:.1%}, peak {e.memory.peak_bytes / GIB:.1f} GiB")
        if self.num_folded:
            lines.append(f"{self.num_folded} other placement(s) of the ranked plans give the same figures and are "
                         "folded into them ('same as'; --all-placements / fold_equivalent=False lists them)")
        if not self.complete:
            lines.append("note: stopped re-scoring at the max_rescore limit; the order may differ from "
                         "an exhaustive search")
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)


def _runnable_cols(r: RankedPlan) -> dict[str, Any]:
    return {"runnable": r.runnable, "not_runnable": r.not_runnable or ""}


COLUMNS = [
    "plan", "num_gpus", "dp", "tp", "pp", "cp", "ep", "micro_batch_size", "virtual_stages", "schedule",
    "zero_stage", "cp_attention", "recompute", "sequence_parallel", "placement", "layers_per_stage", "step_time_s",
    "tokens_per_s", "model_tflops_per_gpu", "hardware_tflops_per_gpu", "mfu", "hfu", "peak_bytes",
    "peak_gib", "capacity_bytes", "compute_s", "tp_comm_s", "cp_comm_s", "ep_comm_s", "dp_comm_s", "pp_comm_s",
    "bubble_s", "optimizer_s", "parameters_bytes", "gradients_bytes", "optimizer_bytes",
    "activations_bytes", "buffers_bytes", "stack", "gpu_profile", "equivalent", "equivalent_placements", "runnable",
    "not_runnable",
]
