"""The one place where a plan is checked against a model, a cluster and a training spec.

Every rule quotes the numbers and says how to fix it. `plan_problems` lists them all (the planner
turns them into 'invalid' rejections); `check_plan` raises the first as a `PlanError`."""

from __future__ import annotations

from ..specs import ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec

__all__ = ["PlanError", "plan_problems", "check_plan"]


class PlanError(ValueError):
    """A plan that breaks a consistency rule; `field` names the plan field to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def plan_problems(model: ModelSpec, cluster: ClusterSpec | None, training: TrainingSpec,
                  plan: ParallelPlan, *, auto_split: bool = False) -> list[PlanError]:
    """Every rule `plan` breaks for this model, cluster and training spec (empty when valid).
    `auto_split`: stages that do not divide the layers are allowed (the caller balances them,
    as `costmodel.estimate` does); otherwise such a plan needs `layers_per_stage`."""
    out: list[PlanError] = []

    def bad(field: str, message: str) -> None:
        out.append(PlanError(field, message))

    tp, pp, dp, cp, mb = plan.tp, plan.pp, plan.dp, plan.cp, plan.micro_batch_size
    if model.num_heads % tp:
        bad("tp", f"num_heads={model.num_heads} of {model.name} is not divisible by tp={tp}; "
                  f"use a tp that divides {model.num_heads}")
    if model.kv_heads % tp:
        bad("tp", f"num_kv_heads={model.kv_heads} of {model.name} is not divisible by tp={tp}; "
                  f"use a tp that divides {model.kv_heads}")
    if model.ffn_size % tp:
        bad("tp", f"ffn_hidden_size={model.ffn_size} is not divisible by tp={tp}")
    if cluster is not None and plan.world_size > cluster.num_gpus:
        bad("dp", f"the plan needs dp*tp*pp*cp={dp}*{tp}*{pp}*{cp}={plan.world_size} GPUs but cluster "
                  f"{cluster.name} has {cluster.num_gpus} ({cluster.num_nodes} nodes x {cluster.gpus_per_node}); "
                  "lower a degree or add nodes")
    if training.global_batch_size % (dp * mb):
        bad("micro_batch_size", f"global_batch_size={training.global_batch_size} is not divisible by "
                                f"dp*micro_batch_size={dp}*{mb}={dp * mb}")
    if training.seq_len > model.max_seq_len:
        bad("seq_len", f"seq_len={training.seq_len} exceeds max_seq_len={model.max_seq_len} of {model.name}")
    if training.seq_len % cp:
        bad("cp", f"seq_len={training.seq_len} is not divisible by cp={cp}")
    elif plan.sequence_parallel and (training.seq_len // cp) % tp:
        bad("sequence_parallel", f"seq_len/cp={training.seq_len // cp} is not divisible by tp={tp}; "
                                 "sequence parallelism shards the sequence over the TP group")
    if cp > 1 and model.arch != "decoder":
        bad("cp", f"context parallelism is supported for decoder models only, not {model.arch}")
    if plan.ep > 1 and not model.is_moe:
        bad("ep", f"ep={plan.ep} needs a mixture-of-experts model; {model.name} is dense (use ep=1)")
    elif model.is_moe and model.num_experts % plan.ep:
        bad("ep", f"ep={plan.ep} does not divide num_experts={model.num_experts} of {model.name}; each "
                  "expert-parallel rank holds num_experts/ep experts, use an ep that divides it")
    stages = pp * plan.virtual_stages
    layers = model.total_layers
    if stages > layers:
        bad("pp", f"pp*virtual_stages={pp}*{plan.virtual_stages}={stages} exceeds the {layers} layers of "
                  f"{model.name}; use fewer stages")
    elif plan.layers_per_stage is not None:
        if sum(plan.layers_per_stage) != layers:
            bad("layers_per_stage", f"layers_per_stage sums to {sum(plan.layers_per_stage)} but "
                                    f"{model.name} has {layers} layers")
    elif layers % stages and not auto_split:
        bad("pp", f"{layers} layers do not split evenly over pp*virtual_stages={stages} stages; "
                  "give layers_per_stage explicitly or pick a divisor")
    if plan.schedule == "interleaved-1f1b" and training.global_batch_size % (dp * mb) == 0:
        m = plan.num_micro_batches(training.global_batch_size)
        if m % pp:
            bad("schedule", f"interleaved-1f1b needs micro-batches per step ({m}) to be a multiple of "
                            f"pp={pp}; change global batch, dp or micro_batch_size")
    return out


def check_plan(model: ModelSpec, cluster: ClusterSpec | None, training: TrainingSpec,
               plan: ParallelPlan, *, auto_split: bool = False) -> None:
    """Raise `PlanError` (a ValueError naming the field) for the first rule `plan` breaks."""
    problems = plan_problems(model, cluster, training, plan, auto_split=auto_split)
    if problems:
        raise problems[0]
