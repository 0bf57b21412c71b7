"""Model states on one GPU as each stack keeps them: weights, master weights, gradients, optimizer
states, the 16-bit weight copies a step computes with, and the optimizer's temporaries.

Weight schemes (`StackMemorySpec.weights`; `WEIGHT_SCHEMES` codes):
- `autocast` (paraplan's executor without FSDP): fp32 parameters are the master weights (4 B/param) and get
  fp32 gradients (4 B); torch.autocast casts each linear's weight to 16 bits once per forward and caches
  the copy until the autocast context exits (2 B per linear parameter; the executor runs the backward
  inside that context; torch.amp docs, "autocast caches casts of leaf tensors").
- `fsdp_mixed_precision` (FSDP / FSDP2 with MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32);
  Zhao et al. 2023; torchtitan): fp32 sharded parameters (4 B / shards), fp32 sharded gradients, 16-bit
  unsharded copies only of the units in flight: the computing unit, `fsdp_prefetch_units` prefetched ones
  and the root (embedding, head) that FSDP2 does not reshard after forward; without resharding after
  forward (ZeRO-1/2) every unit stays gathered between forward and backward (2 B/param).
- `half_params` (Megatron-LM's Float16Module, DeepSpeed's bf16/fp16 engines): 16-bit model weights
  (2 B), fp32 master weights in the optimizer (4 B, sharded from ZeRO-1), gradients in fp32 buffers when
  the stack accumulates in fp32 (Megatron forces it for bf16: `accumulate_allreduce_grads_in_fp32`;
  DeepSpeed's BF16_Optimizer), else 16-bit; ZeRO-3 gathers 16-bit units in flight.
- fp32 training (any stack, `mixed=False`): fp32 weights and gradients, no master copy, no autocast
  copies; gathered units (FSDP, ZeRO-3) are fp32.
Optimizer states: Adam(W) momentum + variance in fp32 (8 B), SGD momentum (4 B), sharded from ZeRO-1
(Rajbhandari et al. 2020, sec. 3.1). Temporaries of one optimizer step: none for fused AdamW (one kernel
over all tensors of a group); torch's multi-tensor (foreach) AdamW materializes sqrt(v) for every tensor
of a group at once (`torch.optim.adamw._multi_tensor_adamw`: `exp_avg_sq_sqrt = torch._foreach_sqrt(...)`),
4 B per parameter of the group; a 16-bit optimizer that keeps 16-bit gradients copies them to fp32 for the
step (Megatron's fp16 optimizer, `_copy_model_grads_to_main_grads`). All functions are numpy-broadcastable."""

from __future__ import annotations

from typing import Any

__all__ = ["WEIGHT_SCHEMES", "weights_at_rest_bytes", "master_weight_bytes",
           "optimizer_state_bytes", "gradient_bytes", "grad_bytes_per_param", "weight_copy_bytes",
           "optimizer_temporary_bytes", "grad_accumulation_temporary_bytes"]

Num = Any
WEIGHT_SCHEMES = {"autocast": 0, "fsdp_mixed_precision": 1, "half_params": 2}
HALF = 2   # bytes of a 16-bit copy


def _shard(nbytes: Num, cond: Num, shards: Num) -> Num:
    """`nbytes` divided by `shards` where `cond` holds."""
    return nbytes / (1 + cond * (shards - 1))


def _work_bytes(mixed: bool) -> int:
    """Bytes of a weight copy the step computes with: 16-bit in mixed precision, else fp32."""
    return HALF if mixed else 4


def weights_at_rest_bytes(params: Num, scheme: Num, *, zero: Num, shards: Num, mixed: bool) -> Num:
    """Model weights held between steps: 16-bit for half_params in mixed precision, else fp32; sharded under
    ZeRO-3, and from ZeRO-1 under FSDP (it keeps sharded parameters at rest)."""
    half = (scheme == WEIGHT_SCHEMES["half_params"]) * mixed
    per_param = half * HALF + (1 - half) * 4
    sharded = (zero >= 3) | ((scheme == WEIGHT_SCHEMES["fsdp_mixed_precision"]) & (zero >= 1))
    return _shard(params * per_param, sharded, shards)


def master_weight_bytes(params: Num, scheme: Num, *, zero: Num, shards: Num, mixed: bool) -> Num:
    """fp32 master weights in the optimizer (half_params in mixed precision), sharded from ZeRO-1."""
    return _shard((scheme == WEIGHT_SCHEMES["half_params"]) * mixed * 4 * params, zero >= 1, shards)


def optimizer_state_bytes(params: Num, optimizer: str, *, zero: Num, shards: Num) -> Num:
    """Adam(W): momentum + variance in fp32 (8 B/param); SGD: momentum (4 B); sharded from ZeRO-1."""
    per_param = 8 if optimizer in ("adam", "adamw") else 4
    return _shard(params * per_param, zero >= 1, shards)


def grad_bytes_per_param(scheme: Num, *, dtype: str, accumulation: str, override: int | None) -> Num:
    """Bytes of a kept gradient: the TrainingSpec's grad_dtype if given; fp32 for autocast, FSDP mixed
    precision (fp32 parameters, fp32 reduction) and fp32 training; for half_params fp32 when the stack
    accumulates in fp32 (`fp32_grad_accumulation`: 'always', or 'bf16' in bf16 training), else 16-bit."""
    if override is not None:
        return override + 0 * scheme
    if dtype in ("fp32", "tf32"):
        return 4 + 0 * scheme
    half = scheme == WEIGHT_SCHEMES["half_params"]
    fp32_acc = accumulation == "always" or (accumulation == "bf16" and dtype == "bf16")
    return half * (4 if fp32_acc else HALF) + (1 - half) * 4


def gradient_bytes(params: Num, grad_bytes: Num, *, zero: Num, shards: Num, scheme: Num) -> Num:
    """Gradients kept on the GPU: sharded from ZeRO-2 (FSDP mixed precision shards them from ZeRO-2 too:
    ZeRO-1 plans accumulate unsharded gradients until the last micro-batch)."""
    return _shard(params * grad_bytes, zero >= 2, shards)


def weight_copy_bytes(scheme: Num, *, zero: Num, params: Num, linear_params: Num, unit_params: Num,
                      root_params: Num, prefetch_units: int, autocast_cache: bool, mixed: bool) -> Num:
    """Weight copies alive while a micro-batch computes: autocast's 16-bit cache of every linear weight (when
    the backward runs inside autocast), FSDP's gathered units (ZeRO-3: the computing unit, the prefetched
    ones and the root; ZeRO-0..2: every unit), half_params ZeRO-3's gathered units; gathered copies are
    16-bit in mixed precision, fp32 otherwise."""
    work = _work_bytes(mixed)
    units = (1 + prefetch_units) * unit_params
    autocast = (scheme == WEIGHT_SCHEMES["autocast"]) * (HALF * linear_params if autocast_cache and mixed else 0.0)
    fsdp = (scheme == WEIGHT_SCHEMES["fsdp_mixed_precision"]) * work * (
        (zero >= 3) * (units + root_params) + (zero < 3) * params)
    half = (scheme == WEIGHT_SCHEMES["half_params"]) * (zero >= 3) * work * units
    return autocast + fsdp + half


def optimizer_temporary_bytes(kernel: str, *, group_params: Num, scheme: Num, grad_bytes: Num,
                              local_params: Num) -> Num:
    """Transient bytes of one optimizer step: the foreach sqrt(v) temporary (4 B per parameter of the
    group it steps at once), plus fp32 copies of 16-bit gradients for half_params (4 B per local param)."""
    foreach = 4 * group_params if kernel == "foreach" else 0.0
    copies = (scheme == WEIGHT_SCHEMES["half_params"]) * (grad_bytes < 4) * 4 * local_params   # 16-bit grads only
    return foreach + copies


def grad_accumulation_temporary_bytes(scheme: Num, *, largest_param: Num, grad_bytes: Num, micro_batches: Num,
                                      mixed: bool) -> Num:
    """The freshly computed gradient of the largest parameter before it is added into the kept one (a
    16-bit gradient folded into an fp32 buffer, or an fp32 .grad += a new one: autocast's bf16 weight
    gradient is cast to fp32 first); only once a step accumulates (more than one micro-batch)."""
    autocast = (scheme == WEIGHT_SCHEMES["autocast"]) * mixed
    per_param = autocast * (grad_bytes + HALF) + (1 - autocast) * grad_bytes
    return (micro_batches > 1) * per_param * largest_param
