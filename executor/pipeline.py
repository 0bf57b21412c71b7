"""Pipeline parallelism with `torch.distributed.pipelining`: the plan's layer split, manual
`PipelineStage`s (one per model chunk) and the plan's schedule.

Stage s of S = pp * virtual_stages holds blocks stage_layers[:s] .. stage_layers[:s+1]; rank r holds
stages r, r+pp, r+2pp, ... (looped placement, Narayanan et al. 2021, sec 2.2 "interleaved schedule")."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining.schedules import (
    PipelineScheduleMulti,
    PipelineScheduleSingle,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
    ScheduleInterleavedZeroBubble,
)

from costmodel.specs import ParallelPlan
from costmodel.step.runnable import schedule_problems

from .model import Transformer
from .t5 import T5

__all__ = ["stage_ids", "layer_ranges", "split_model", "build_stages", "build_schedule", "check_schedule_supported"]


def check_schedule_supported(plan: ParallelPlan, n_microbatches: int | None = None) -> None:
    """ValueError for a schedule the executor cannot run with `n_microbatches` per step and pipeline:
    torch's limits (1F1B needs at least pp, interleaved 1F1B a multiple of pp), the rules of
    `costmodel.step.runnable.schedule_problems`."""
    problems = schedule_problems(plan, n_microbatches)
    if problems:
        raise problems[0]


def layer_ranges(plan: ParallelPlan, num_layers: int) -> list[range]:
    """Block indices of each (virtual) stage, from `plan.stage_layers` (checked to cover every layer)."""
    counts = plan.stage_layers(num_layers)
    if sum(counts) != num_layers:
        raise ValueError(f"layers_per_stage: {counts} sums to {sum(counts)} but the model has "
                         f"{num_layers} layers; give a split that sums to {num_layers}")
    out, start = [], 0
    for n in counts:
        out.append(range(start, start + n))
        start += n
    return out


def stage_ids(plan: ParallelPlan, pp_rank: int) -> list[int]:
    """Global stage indices held by pipeline rank `pp_rank` (looped: r, r + pp, ...)."""
    return [pp_rank + k * plan.pp for k in range(plan.virtual_stages)]


def split_model(model: Transformer | T5, plan: ParallelPlan, *, pp_rank: int) -> list[tuple[int, Transformer | T5]]:
    """This rank's chunks of the (meta-device) model as (stage index, module); names are kept
    (a chunk's `layers` keeps its global keys), the embedding stays on stage 0, the final norm and
    output on the last stage."""
    if plan.pp == 1:
        return [(0, model)]
    if model.spec.tie_embeddings:
        raise ValueError(f"pp: {model.spec.name} ties its output to the input embedding, which pipeline "
                         "stages cannot share; use pp=1 or a model with tie_embeddings: false")
    ranges = layer_ranges(plan, model.spec.total_layers)  # encoder-decoder: one stack, encoder first
    last = len(ranges) - 1
    parts = []
    for s in stage_ids(plan, pp_rank):
        part = copy.deepcopy(model)
        for key in list(part.layers.keys()):
            if int(key) not in ranges[s]:
                del part.layers[key]
        if s != 0:
            part.embed = None
        if s != last:
            part.norm = None
            part.output = None
        parts.append((s, part))
    return parts


def build_stages(parts: list[tuple[int, torch.nn.Module]], plan: ParallelPlan, *, device: torch.device,
                 group: dist.ProcessGroup | None) -> list[PipelineStage]:
    num_stages = plan.pp * plan.virtual_stages
    return [PipelineStage(module, s, num_stages, device, group=group) for s, module in parts]


def build_schedule(stages: list[PipelineStage], plan: ParallelPlan, *, n_microbatches: int,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                   ) -> PipelineScheduleSingle | PipelineScheduleMulti:
    """The plan's schedule. `loss_fn` returns a per-micro-batch loss already scaled for the global
    batch, so torch's own 1/n_microbatches grad scaling is off."""
    check_schedule_supported(plan, n_microbatches)
    kwargs = {"n_microbatches": n_microbatches, "loss_fn": loss_fn, "scale_grads": False}
    if plan.schedule == "gpipe":
        return ScheduleGPipe(stages[0], **kwargs) if len(stages) == 1 else _multi_error(plan)
    if plan.schedule == "1f1b":
        return Schedule1F1B(stages[0], **kwargs) if len(stages) == 1 else _multi_error(plan)
    if plan.schedule == "interleaved-1f1b":
        return ScheduleInterleaved1F1B(stages, **kwargs)
    if plan.schedule == "zero-bubble":
        return ScheduleInterleavedZeroBubble(stages, **kwargs)
    raise ValueError(f"schedule: unknown pipeline schedule {plan.schedule!r}")


def _multi_error(plan: ParallelPlan):  # pragma: no cover - guarded by ParallelPlan's validator
    raise ValueError(f"schedule: {plan.schedule!r} runs one stage per rank; virtual_stages must be 1")
