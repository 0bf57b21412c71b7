"""What the cost model returns: `StepEstimate` (time, memory, timeline) or a `Rejection`;
and what the executor measures: `StepMeasurement`."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from ._base import Spec
from .plan import ParallelPlan

__all__ = [
    "TimeBreakdown",
    "MemoryBreakdown",
    "TimelineEvent",
    "StepEstimate",
    "Rejection",
    "StepMeasurement",
]


class TimeBreakdown(Spec):
    """Critical-path step time split by cause; the parts sum to `StepEstimate.step_time_s`.
    Communication figures are the *exposed* part (not hidden behind compute)."""

    compute_s: float = Field(ge=0, description="forward + backward (+ recompute) on the critical path")
    tp_comm_s: float = Field(default=0.0, ge=0)
    cp_comm_s: float = Field(default=0.0, ge=0)
    ep_comm_s: float = Field(default=0.0, ge=0, description="expert-parallel token dispatch/combine all-to-alls")
    dp_comm_s: float = Field(default=0.0, ge=0)
    pp_comm_s: float = Field(default=0.0, ge=0)
    bubble_s: float = Field(default=0.0, ge=0, description="pipeline idle time on the critical path")
    optimizer_s: float = Field(default=0.0, ge=0)

    @property
    def total_s(self) -> float:
        return (self.compute_s + self.tp_comm_s + self.cp_comm_s + self.ep_comm_s + self.dp_comm_s + self.pp_comm_s
                + self.bubble_s + self.optimizer_s)


class MemoryBreakdown(Spec):
    """Bytes on one GPU; `peak_bytes` is the high-water mark (states + activations + buffers)."""

    parameters_bytes: float = Field(ge=0)
    gradients_bytes: float = Field(ge=0)
    optimizer_bytes: float = Field(ge=0, description="optimizer states incl. fp32 master weights")
    activations_bytes: float = Field(ge=0, description="stored activations of in-flight micro-batches")
    buffers_bytes: float = Field(default=0.0, ge=0, description="communication buffers, logits, workspace")
    peak_bytes: float = Field(ge=0)


class TimelineEvent(Spec):
    """One interval of the simulated step on one pipeline rank (Chrome-trace friendly)."""

    stage: int = Field(ge=0, description="pipeline rank")
    kind: Literal["fwd", "bwd", "bwd_input", "bwd_weight", "recompute", "send", "recv",
                  "dp_comm", "optimizer"]
    micro_batch: int = Field(default=-1, description="-1 when not tied to a micro-batch")
    chunk: int = Field(default=0, ge=0, description="virtual stage (model chunk) on this rank")
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)


_COMM_TID = 1000
"""Trace thread offset for a rank's transfers, so they never overlap its compute in the viewer."""


def _trace_thread(event: TimelineEvent) -> int:
    comm = event.kind in ("send", "recv", "dp_comm")
    return event.stage + _COMM_TID if comm else event.stage


class StepEstimate(Spec):
    """Predicted cost of one optimizer step of `plan`."""

    plan: ParallelPlan
    num_gpus: int = Field(gt=0)
    step_time_s: float = Field(gt=0)
    tokens_per_s: float = Field(gt=0)
    model_tflops_per_gpu: float = Field(ge=0, description="model FLOPs (no recompute) per second per GPU / 1e12")
    hardware_tflops_per_gpu: float = Field(ge=0, description="incl. recomputation FLOPs")
    mfu: float = Field(ge=0, description="model FLOPs utilization vs dense peak")
    hfu: float = Field(ge=0, description="hardware FLOPs utilization vs dense peak")
    time: TimeBreakdown
    memory: MemoryBreakdown = Field(description="the most loaded GPU (stage)")
    stage_memory: tuple[MemoryBreakdown, ...] = Field(default=(), description="one per pipeline rank")
    capacity_bytes: float = Field(gt=0, description="HBM per GPU")
    timeline: tuple[TimelineEvent, ...] = ()
    stack: str = Field(default="megatron", description="software stack the estimate assumes (TrainingSpec.stack)")
    gpu_profile: str | None = Field(default=None, description="measured GPU profile used (provenance); None: the "
                                                              "stack's analytical kernel efficiencies")

    @property
    def fits(self) -> bool:
        return self.memory.peak_bytes <= self.capacity_bytes

    def chrome_trace(self) -> dict[str, Any]:
        """The timeline as a Chrome/Perfetto trace (one thread per pipeline rank, times in µs)."""
        events = [
            {
                "name": e.kind if e.micro_batch < 0 else f"{e.kind} mb{e.micro_batch}" + (f" c{e.chunk}" if e.chunk else ""),
                "cat": e.kind,
                "ph": "X",
                "pid": 0,
                "tid": _trace_thread(e),
                "ts": e.start_s * 1e6,
                "dur": (e.end_s - e.start_s) * 1e6,
                "args": {"micro_batch": e.micro_batch, "chunk": e.chunk},
            }
            for e in self.timeline
        ]
        meta = [
            {"name": "thread_name", "ph": "M", "pid": 0, "tid": tid,
             "args": {"name": f"stage {tid}" if tid < _COMM_TID else f"stage {tid - _COMM_TID} comm"}}
            for tid in sorted({_trace_thread(e) for e in self.timeline})
        ]
        return {"traceEvents": meta + events, "displayTimeUnit": "ms",
                "otherData": {"plan": self.plan.short()}}

    def chrome_trace_json(self) -> str:
        return json.dumps(self.chrome_trace())


class Rejection(Spec):
    """A plan that cannot run: infeasible is a result, not an error (Calculon's convention).

    `code` is one of: 'oom' (does not fit in memory), 'invalid' (breaks a divisibility/consistency
    rule), 'unsupported'."""

    plan: ParallelPlan
    code: Literal["oom", "invalid", "unsupported"]
    message: str
    needed_bytes: float | None = None
    capacity_bytes: float | None = None


class ValidationResult(Spec):
    """A run's evaluation on the held-out split of its corpus after `step` (`executor.evaluate`):
    mean token loss, perplexity exp(loss), and for seq2seq models BLEU (sacrebleu) and ROUGE F1
    (rouge-score) of greedy outputs, on a 0-100 scale."""

    step: int = Field(ge=0)
    loss: float
    perplexity: float
    tokens: int = Field(ge=0, description="target tokens scored")
    bleu: float | None = None
    rouge1: float | None = None
    rouge2: float | None = None
    rouge_l: float | None = None


class StepMeasurement(Spec):
    """What the executor measured for a plan (`summary.json`)."""

    plan: ParallelPlan
    model: str
    device: str = Field(description="e.g. 'cpu', 'NVIDIA H200'")
    backend: Literal["gloo", "nccl"]
    world_size: int = Field(gt=0)
    steps: int = Field(ge=0)
    global_batch_size: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    step_time_s: float = Field(ge=0, description="median over measured steps (warm-up excluded)")
    tokens_per_s: float = Field(ge=0)
    peak_bytes: float = Field(ge=0, description="max over ranks")
    achieved_tflops_per_gpu: float = Field(default=0.0, ge=0)
    mfu: float | None = None
    losses: tuple[float, ...] = ()
    step_times_s: tuple[float, ...] = ()
    validation: tuple[ValidationResult, ...] = ()
