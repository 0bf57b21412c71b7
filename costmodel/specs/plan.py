"""`ParallelPlan`: every parallelism knob, the contract between planner, cost model, executor and UI.

A plan file is this model as JSON (`save_plan` / `load_plan`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from ..atomic import write_text_atomic
from ._base import Spec, read_json, shown_path, validate_spec
from .limits import MAX_GLOBAL_BATCH, MAX_GPUS, MAX_LAYERS, Flag, _whole, whole_up_to

__all__ = ["ParallelPlan", "Schedule", "Recompute", "CpAttention", "AXES", "save_plan", "load_plan"]

Schedule = Literal["gpipe", "1f1b", "interleaved-1f1b", "zero-bubble"]
Recompute = Literal["none", "selective", "full"]
CpAttention = Literal["auto", "all-gather", "ring"]
"""Context-parallel attention: all-gather of K/V (Llama 3), ring attention (torch, CUDA), or by device."""
AXES = ("tp", "cp", "dp", "pp")
"""Mesh axes; `placement` orders them innermost (fastest-varying rank) first."""

Degree = whole_up_to(MAX_GPUS, "GPUs")
Blocks = whole_up_to(MAX_LAYERS, "Transformer blocks")


class ParallelPlan(Spec):
    """Degrees and knobs of one way to train a model. Rules that need the model or cluster live in
    `costmodel.check_plan`; this class checks what the plan alone can."""

    dp: Degree = Field(default=1, gt=0, description="data-parallel degree")
    tp: Degree = Field(default=1, gt=0, description="tensor-parallel degree")
    pp: Degree = Field(default=1, gt=0, description="pipeline-parallel degree (stages)")
    cp: Degree = Field(default=1, gt=0, description="context-parallel degree (sequence sharded over cp ranks)")
    cp_attention: CpAttention = Field(
        default="auto", description="CP attention: 'all-gather' of K/V (any device), 'ring' (CUDA), 'auto' by device"
    )
    ep: Degree = Field(default=1, gt=0, description="expert-parallel degree: the data- and context-parallel "
                       "ranks split into groups of ep that share out the experts (ep divides dp*cp)")
    micro_batch_size: whole_up_to(MAX_GLOBAL_BATCH, "sequences per step") = Field(default=1, gt=0, description="sequences per micro-batch")
    virtual_stages: Blocks = Field(default=1, gt=0, description="model chunks per pipeline rank (interleaving)")
    schedule: Schedule = "1f1b"
    zero_stage: Annotated[Literal[0, 1, 2, 3], BeforeValidator(_whole)] = Field(default=0, description="0 = DDP, 1/2 = sharded optimizer(+grads), 3 = FSDP")
    recompute: Recompute = "none"
    sequence_parallel: Flag = False
    layers_per_stage: tuple[Blocks, ...] | None = Field(
        default=None, description="transformer blocks per (virtual) stage, pp*virtual_stages entries"
    )
    placement: tuple[Literal["tp", "cp", "dp", "pp"], ...] = Field(
        default=AXES, description="mesh axes innermost first; default puts TP on the fastest links"
    )

    @model_validator(mode="after")
    def _check(self) -> ParallelPlan:
        if self.world_size > MAX_GPUS:
            raise ValueError(f"dp*tp*pp*cp={self.dp}*{self.tp}*{self.pp}*{self.cp}={self.world_size:,} GPUs exceeds "
                             f"the {MAX_GPUS:,} GPUs paraplan models (docs/LIMITS.md)")
        if (self.dp * self.cp) % self.ep:
            raise ValueError(f"ep: ep={self.ep} does not divide dp*cp={self.dp}*{self.cp}; expert-parallel groups "
                             "are carved out of the data- and context-parallel ranks, so use an ep that divides "
                             "dp*cp (or raise dp)")
        if self.virtual_stages > 1 and self.schedule != "interleaved-1f1b":
            raise ValueError(
                f"virtual_stages={self.virtual_stages} needs schedule='interleaved-1f1b' (got {self.schedule!r})"
            )
        if self.schedule == "interleaved-1f1b" and self.pp == 1:
            raise ValueError("schedule='interleaved-1f1b' needs pp > 1")
        if self.sequence_parallel and self.tp == 1:
            raise ValueError("sequence_parallel=True needs tp > 1 (it shards activations over the TP group)")
        if self.cp_attention != "auto" and self.cp == 1:
            raise ValueError(f"cp_attention={self.cp_attention!r} needs cp > 1; use 'auto' with cp=1")
        if sorted(self.placement) != sorted(AXES):
            raise ValueError(f"placement={self.placement} must order each of {AXES} exactly once")
        if self.layers_per_stage is not None:
            stages = self.pp * self.virtual_stages
            if len(self.layers_per_stage) != stages:
                raise ValueError(
                    f"layers_per_stage has {len(self.layers_per_stage)} entries; "
                    f"pp*virtual_stages={self.pp}*{self.virtual_stages}={stages} are needed"
                )
            if any(n < 0 for n in self.layers_per_stage):
                raise ValueError(f"layers_per_stage={self.layers_per_stage} has a negative entry")
        return self

    @property
    def world_size(self) -> int:
        """GPUs the plan uses: dp * tp * pp * cp."""
        return self.dp * self.tp * self.pp * self.cp

    @property
    def model_parallel_size(self) -> int:
        return self.tp * self.pp * self.cp

    @property
    def edp(self) -> int:
        """Expert-data-parallel degree dp*cp/ep: the ranks holding the same experts (Megatron-Core's
        expert data parallelism, with CP folded in as its MoE parallel folding does)."""
        return self.dp * self.cp // self.ep

    def num_micro_batches(self, global_batch_size: int) -> int:
        """Micro-batches per pipeline per step (gradient accumulation steps)."""
        return global_batch_size // (self.dp * self.micro_batch_size)

    def stage_layers(self, num_layers: int) -> tuple[int, ...]:
        """Blocks per (virtual) stage: the explicit split, else an even split."""
        if self.layers_per_stage is not None:
            return self.layers_per_stage
        stages = self.pp * self.virtual_stages
        return tuple([num_layers // stages] * stages)

    def short(self) -> str:
        """A compact label, e.g. 'dp8-tp8-pp16-v2-mb1-z1-full-sp' ('-ep8' after the degrees with experts)."""
        parts = [f"dp{self.dp}", f"tp{self.tp}", f"pp{self.pp}"]
        if self.cp > 1:
            parts.append(f"cp{self.cp}" + ("" if self.cp_attention == "auto" else f"-{self.cp_attention}"))
        if self.ep > 1:
            parts.append(f"ep{self.ep}")
        if self.virtual_stages > 1:
            parts.append(f"v{self.virtual_stages}")
        parts.append(f"mb{self.micro_batch_size}")
        if self.pp > 1:
            parts.append(self.schedule)
        if self.zero_stage:
            parts.append(f"z{self.zero_stage}")
        if self.recompute != "none":
            parts.append(self.recompute)
        if self.sequence_parallel:
            parts.append("sp")
        return "-".join(parts)


def save_plan(plan: ParallelPlan, path: str | os.PathLike[str]) -> Path:
    """Write `plan` as JSON atomically (temp file + rename), so a crash never leaves half a file."""
    return write_text_atomic(path, plan.model_dump_json(indent=2))


def load_plan(path: str | os.PathLike[str]) -> ParallelPlan:
    """Read a plan file; a missing, non-JSON or invalid file raises ValueError naming the file and field."""
    data = read_json(path, what="plan file")
    if isinstance(data, dict) and "plan" in data and isinstance(data["plan"], dict):
        data = data["plan"]  # accept a StepEstimate/search-result record that embeds a plan
    return validate_spec(ParallelPlan, data, where=f"plan file {shown_path(path)}")
