"""The layer split `estimate` prices when a plan gives none and its pp * virtual_stages stages do not
divide the layers: the blocks are balanced over the stages by their priced time (forward + backward +
recomputation + exposed TP/CP traffic of one micro-batch), with the embedding on the first stage and
the LM head + loss on the last (`costmodel.pipeline.balance`, an exact min-max DP). This is what Meta
did for Llama 3 405B (126 layers on 16 stages, "one Transformer layer fewer on the first and the last
stage", The Llama 3 Herd of Models, sec. 3.3.2) and BigScience for BLOOM (70 layers on 12 stages).
The chosen split is returned in the estimate's plan (`StepEstimate.plan.layers_per_stage`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..pipeline.balance import balance_layers
from ..specs import ModelSpec, ParallelPlan
from .costs import Knobs, StepContext, unit_costs

__all__ = ["needs_split", "priced_split", "with_balanced_split"]


def needs_split(model: ModelSpec, plan: ParallelPlan) -> bool:
    """True when `plan` has no explicit split and its stages do not divide the model's layers."""
    stages = plan.pp * plan.virtual_stages
    return plan.layers_per_stage is None and stages <= model.total_layers and model.total_layers % stages != 0


def priced_split(ctx: StepContext, k: Knobs, comm: Any, stages: int) -> tuple[int, ...]:
    """Blocks per (virtual) stage minimising the slowest stage's priced time for one micro-batch."""
    enc, dec, embed, head = unit_costs(ctx, k, comm)

    def per_block(c: Any) -> float:
        return float(c.fwd_s + c.bwd_s + c.recompute_s + c.tp_s + c.cp_s)

    sh = ctx.shape
    costs = np.concatenate([np.full(sh.n_enc, per_block(enc)), np.full(sh.n_dec, per_block(dec))])
    first = float(embed.fwd_s + embed.bwd_s + embed.tp_s)
    last = float(head.fwd_s + head.bwd_s + head.tp_s)
    return balance_layers(costs, stages, first_extra=first, last_extra=last)


def with_balanced_split(ctx: StepContext, k: Knobs, comm: Any, plan: ParallelPlan) -> ParallelPlan:
    """`plan` with `layers_per_stage` set to `priced_split` (the plan is valid by construction)."""
    split = priced_split(ctx, k, comm, plan.pp * plan.virtual_stages)
    return plan.model_copy(update={"layers_per_stage": split})
