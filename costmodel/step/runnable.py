"""What the executor can run: the one place that says which plans `executor` trains on a device.

`costmodel.step.checks` says whether a plan is consistent with a model, cluster and training spec;
this module says whether the executor (plain torch: `torch.distributed` on Gloo or NCCL) can run a
consistent plan there. The planner marks (or, with `runnable_only`, drops) the plans that break a
rule here, and the executor raises the same messages before it starts a process (`plan_unsupported`,
`prepare_run`, `build_engine`). Each rule names the field and the fix, as the plan checks do.

Devices: 'cpu' (Gloo workers, the host preset) and 'cuda' (NCCL, any GPU cluster)."""

from __future__ import annotations

from ..layer.cp_variant import DeviceKind, cp_variant, device_kind
from ..specs import ModelSpec, ParallelPlan
from .checks import PlanError

__all__ = ["DeviceKind", "device_kind", "cp_variant", "model_problems", "schedule_problems", "cp_problems",
           "expert_problems", "executor_problems", "executor_unsupported", "dtype_problem", "EXECUTOR_DTYPES",
           "RING_HEAD_DIM_MULTIPLE", "RING_MAX_HEAD_DIM"]

RING_HEAD_DIM_MULTIPLE = 8
RING_MAX_HEAD_DIM = 256
"""Head dims torch's ring attention runs: its CUDA SDPA kernels (FlashAttention-2, Dao 2023, and the
memory-efficient kernel) take head dims that are multiples of 8, up to 256."""

EXECUTOR_DTYPES: dict[str, tuple[str, ...]] = {"cpu": ("fp32",), "cuda": ("fp32", "bf16", "fp8")}
"""Training dtypes the executor runs per device: fp32 on CPU (losses compared with the single process at
1e-5); on CUDA also bf16 autocast and fp8 linears (torchao, compute capability >= 8.9, checked on the GPU)."""


def dtype_problem(dtype: str, device: DeviceKind) -> PlanError | None:
    """Why the executor cannot train in `dtype` on `device`, or None. fp16 is refused everywhere: fp16
    mixed precision needs dynamic loss scaling (Micikevicius et al. 2018, "Mixed Precision Training",
    sec. 3.2), which the executor does not implement; bf16 keeps fp32's exponent range and needs none."""
    if dtype in EXECUTOR_DTYPES[device]:
        return None
    if dtype == "fp16":
        return PlanError("dtype", "the executor does not train fp16 (it would need loss scaling); use bf16 on "
                                  "GPUs that have it (A100 and newer) or fp32")
    if device == "cpu":
        return PlanError("dtype", f"{dtype} mixed precision runs on CUDA GPUs; on CPU the executor trains fp32 "
                                  "(drop --dtype or pass --dtype fp32)")
    return PlanError("dtype", f"{dtype!r} is not a training dtype of the executor; use one of "
                              f"{', '.join(EXECUTOR_DTYPES[device])}")


def model_problems(model: ModelSpec) -> list[PlanError]:
    """Model families the executor's reference models do not build: decoders and encoders (GPT, Llama,
    BERT style, executor.model) and T5-style encoder-decoders with relative position buckets (executor.t5)."""
    out = []
    if model.arch == "encoder-decoder" and model.position != "relative":
        out.append(PlanError("position", f"the executor's encoder-decoder (T5) uses relative position buckets; "
                                         f"{model.name} has position {model.position!r}: use 'relative'"))
    if model.arch != "encoder-decoder" and model.position == "relative":
        out.append(PlanError("position", f"relative position biases of {model.name} are implemented for "
                                         "encoder-decoder (T5) models only; use position 'learned' or 'rope'"))
    if model.arch == "encoder-decoder" and model.is_moe:
        out.append(PlanError("experts", f"{model.name}: the executor's encoder-decoder has dense MLPs only"))
    if model.position == "rope" and model.kv_channels % 2:
        out.append(PlanError("head_dim", f"rotary positions need an even head_dim, got {model.kv_channels}"))
    if model.is_moe and model.bias:
        out.append(PlanError("bias", f"the executor's experts have no biases; {model.name} needs bias: false to run"))
    if model.is_moe and model.capacity_factor is not None:
        out.append(PlanError("capacity_factor", "the executor runs dropless mixtures of experts (every routed token "
                                                "is computed, the same on every plan); set capacity_factor: null"))
    return out


def schedule_problems(plan: ParallelPlan, n_microbatches: int | None = None) -> list[PlanError]:
    """torch's pipeline schedules' limits: ZeRO-3 stages under zero-bubble, and on micro-batches per step
    and pipeline (`n_microbatches`): 1F1B needs at least pp, interleaved 1F1B a multiple of pp."""
    if plan.pp > 1 and plan.schedule == "zero-bubble" and plan.zero_stage == 3:
        # torch 2.13's split backward collects a stage's weights before FSDP2's pre-backward hook
        # gathers the parameters it resharded after forward: the weight pass then finds no weights
        return [PlanError("zero_stage", "3 cannot run with schedule 'zero-bubble' (torch's split backward looks "
                                        "for the weights before FSDP2 gathers the parameters it resharded after "
                                        "forward, and the stage gets no weight gradients); use zero_stage 2 or "
                                        "schedule '1f1b'")]
    if plan.pp == 1 or n_microbatches is None:
        return []
    if plan.schedule == "1f1b" and n_microbatches < plan.pp:
        return [PlanError("micro_batch_size", f"1f1b needs at least pp={plan.pp} micro-batches per step, got "
                                              f"{n_microbatches}; lower micro_batch_size or use schedule 'gpipe'")]
    if plan.schedule == "interleaved-1f1b" and n_microbatches % plan.pp:
        return [PlanError("schedule", f"interleaved-1f1b needs micro-batches per step ({n_microbatches}) to be a "
                                      f"multiple of pp={plan.pp}; change global batch, dp or micro_batch_size")]
    return []


def cp_problems(plan: ParallelPlan, *, device: DeviceKind, model: ModelSpec | None = None,
                seq_len: int | None = None) -> list[PlanError]:
    """Context parallelism as the executor shards it: the sequence in 2*cp equal chunks, rank i holding
    chunks i and 2cp-1-i, so every rank does the same causal-attention work (Llama Team 2024, sec.
    3.3.2; torch's head-tail load balancer); the ring variant only on CUDA with the head dims its
    kernels take."""
    variant = cp_variant(plan, device)
    if variant is None:
        return []
    out = []
    if model is not None and model.arch == "encoder-decoder":
        out.append(PlanError("cp", f"{model.name} is an encoder-decoder; the executor shards decoder and encoder "
                                   "sequences only (T5's encoder output crosses into every decoder position): "
                                   "use cp=1"))
    if seq_len is not None and seq_len % (2 * plan.cp):
        out.append(PlanError("cp", f"seq_len={seq_len} is not divisible by 2*cp={2 * plan.cp}: the executor splits "
                                   "the sequence into 2*cp chunks (rank i holds chunks i and 2cp-1-i, balancing "
                                   "causal attention); pick a cp with 2*cp dividing seq_len"))
    if variant == "ring" and device != "cuda":
        out.append(PlanError("cp_attention", f"'ring' runs torch's ring attention, which dispatches CUDA SDPA "
                                             f"kernels only; this device is {device}: use 'all-gather' or 'auto'"))
    elif variant == "ring" and model is not None:
        d = model.kv_channels
        if d % RING_HEAD_DIM_MULTIPLE or d > RING_MAX_HEAD_DIM:
            out.append(PlanError("cp_attention", f"'ring' needs a head_dim that is a multiple of "
                                                 f"{RING_HEAD_DIM_MULTIPLE} up to {RING_MAX_HEAD_DIM} (flash / "
                                                 f"efficient SDPA), {model.name} has {d}; use 'all-gather'"))
    return out


def expert_problems(plan: ParallelPlan) -> list[PlanError]:
    """Expert parallelism as the executor lays it out: the experts split over data-parallel ranks only
    (`executor.expert_parallel`), their own data-parallel wrapper outside torch's selective checkpoint."""
    out = []
    if plan.ep > 1 and plan.dp % plan.ep:
        out.append(PlanError("ep", f"the executor splits experts over data-parallel ranks only; ep={plan.ep} must "
                                   f"divide dp={plan.dp} (EP folded over CP is priced by the cost model, not run)"))
    if plan.ep > 1 and plan.recompute == "selective":
        # the experts' own FSDP wrapper runs inside the checkpointed block; torch's selective checkpoint
        # replays its hooks a different number of times in backward and refuses
        out.append(PlanError("recompute", "'selective' cannot run with ep > 1 (the experts' data-parallel wrapper "
                                          "sits inside the recomputed block); use recompute 'full' or 'none'"))
    return out


def executor_problems(plan: ParallelPlan, *, device: DeviceKind, model: ModelSpec | None = None,
                      seq_len: int | None = None, global_batch: int | None = None) -> list[PlanError]:
    """Every rule of this module `plan` breaks; a rule whose input is not given (model, sequence
    length, global batch) is skipped."""
    out = model_problems(model) if model is not None else []
    if model is not None and model.tie_embeddings and plan.pp > 1:
        out.append(PlanError("pp", f"{model.name} ties its output to the input embedding, which pipeline stages "
                                   "cannot share; use pp=1 or a model with tie_embeddings: false"))
    n = global_batch // (plan.dp * plan.micro_batch_size) if global_batch else None
    out += schedule_problems(plan, n)
    out += cp_problems(plan, device=device, model=model, seq_len=seq_len)
    out += expert_problems(plan)
    return out


def executor_unsupported(plan: ParallelPlan, *, device: DeviceKind, model: ModelSpec | None = None,
                         seq_len: int | None = None, global_batch: int | None = None) -> str | None:
    """Why the executor cannot run `plan` on `device` (the first rule it breaks, 'field: ...'), or None."""
    problems = executor_problems(plan, device=device, model=model, seq_len=seq_len, global_batch=global_batch)
    return str(problems[0]) if problems else None
