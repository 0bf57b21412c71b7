"""Memory beyond states and stored activations: the loss's buffers, communication buffers, the CUDA
context and NCCL, and the caching allocator's reserve.

- Loss (last stage): `loss_bytes_per_logit` x tokens x vocabulary (/ tp when vocabulary-parallel) at the
  loss's peak. torch's `F.cross_entropy(logits.float(), ...)` (paraplan, FSDP/torchtitan): at the start of
  the backward the fp32 log-softmax output, the nll-loss gradient and the log-softmax gradient coexist,
  12 B per logit (`_log_softmax_backward_data(grad, output)`); Megatron's fused vocabulary-parallel
  cross-entropy keeps one fp32 softmax it updates in place next to the 16-bit logits, 6 B per logit
  (Korthikanti et al. 2022 sec. 4.3 count the 4 B fp32 logits).
- Communication buffers: the pipeline's send and receive buffers of one micro-batch's boundary
  activations (2 x b s h / t); the sequence-parallel all-gather of a block input (b s h); FSDP's
  reduce-scatter of one unit (its 16-bit unsharded gradients and their fp32 copy, 6 B/param,
  `MixedPrecisionPolicy(reduce_dtype=fp32)`); DeepSpeed's ZeRO-1/2 buckets (`bucket_bytes`).
- Outside the caching allocator: the CUDA context and kernel images (`cuda_context_bytes`; 1.3-1.6 GiB on
  V100 / A100 measured by BigScience with eager module loading, less with CUDA's lazy loading) and NCCL's
  buffers per communicator (NCCL_BUFFSIZE 4 MiB per channel and peer). None on a CPU host.
- Reserved: the caching allocator rounds blocks and keeps freed blocks cached; at the peak it holds
  `allocator_reserve_fraction` more than it has allocated, plus the blocks freed just before the loss's
  larger fp32 buffers that cannot hold them (`loss_hole_bytes_per_logit`: the 16-bit logits). A CPU host
  has no caching allocator (reserved = allocated).
All functions are numpy-broadcastable."""

from __future__ import annotations

from typing import Any

from ..specs.stack import StackMemorySpec

__all__ = ["loss_buffer_bytes", "loss_hole_bytes", "pipeline_buffer_bytes", "sequence_parallel_buffer_bytes",
           "weight_grad_pending_bytes",
           "reduce_scatter_buffer_bytes", "communicator_count", "context_bytes", "reserved_bytes"]

Num = Any
FSDP_REDUCE_SCATTER_BYTES = 6.0
"""Bytes per parameter of one unit's reduce-scatter: its 16-bit unsharded gradients + their fp32 copy."""


def _vocab_local(vocab: int, *, tp: Num, pp: int, gathered_with_pp: bool) -> Num:
    """Vocabulary entries of the logits on one rank: V / tp, or V when the logits are gathered (tp > 1
    and pp > 1 on a stack that gathers them)."""
    if gathered_with_pp and pp > 1:
        return vocab + 0 * tp
    return vocab / tp


def loss_buffer_bytes(mem: StackMemorySpec, *, tokens: Num, vocab: int, tp: Num, pp: int, fp32: bool) -> Num:
    """Bytes of the loss at its peak on the last stage; with tp > 1 a vocabulary-parallel loss may keep more
    (`vocab_parallel_loss_bytes_per_logit`: torch's `loss_parallel` computes log-softmax and its backward
    from shard-local pieces, `(grad_input + exp(x)) * grad_output` with the zero-filled one-hot, 16 B)."""
    per_logit = (mem.loss_bytes_per_logit_fp32 if fp32 and mem.loss_bytes_per_logit_fp32 is not None
                 else mem.loss_bytes_per_logit)
    gathered = mem.logits_gathered_with_pp and pp > 1
    if mem.vocab_parallel_loss_bytes_per_logit is not None and not gathered:
        per_logit = (tp > 1) * mem.vocab_parallel_loss_bytes_per_logit + (tp == 1) * per_logit
    return per_logit * tokens * _vocab_local(vocab, tp=tp, pp=pp, gathered_with_pp=mem.logits_gathered_with_pp)


def loss_hole_bytes(mem: StackMemorySpec, *, tokens: Num, vocab: int, tp: Num, pp: int, fp32: bool) -> Num:
    """Reserved-but-unallocated bytes the loss leaves: the 16-bit logits freed before its fp32 buffers
    (none in fp32 training, where the logits are already fp32)."""
    if fp32:
        return 0.0 * tokens
    return mem.loss_hole_bytes_per_logit * tokens * _vocab_local(vocab, tp=tp, pp=pp,
                                                                  gathered_with_pp=mem.logits_gathered_with_pp)


def pipeline_buffer_bytes(*, pp: int, act_bytes: int, tokens: Num, h: int, tp: Num) -> Num:
    """Send + receive buffers of one micro-batch's boundary activations (b s h / t each)."""
    return (pp > 1) * 2 * act_bytes * tokens * h / tp


def sequence_parallel_buffer_bytes(*, sp: Num, act_bytes: int, tokens: Num, h: int) -> Num:
    """The all-gathered (full-sequence) input of a block's TP region under sequence parallelism."""
    return sp * act_bytes * tokens * h


def reduce_scatter_buffer_bytes(*, fsdp: Num, zero: Num, unit_params: Num, mixed: bool) -> Num:
    """FSDP's reduce-scatter of one unit (per micro-batch from ZeRO-2): its unsharded gradients and their
    fp32 copy for the reduction (16-bit + 4 in mixed precision, 4 + 4 in fp32)."""
    per_param = FSDP_REDUCE_SCATTER_BYTES if mixed else 8.0
    return fsdp * (zero >= 2) * per_param * unit_params


def weight_grad_pending_bytes(*, h: int, q: int, kv: int, f: int, gated: bool, vocab: int, tokens: Num, tp: Num,
                              act_bytes: int, blocks: Num, last: Num, pending: Num) -> Num:
    """What a zero-bubble schedule keeps for each micro-batch whose input gradient ran and whose weight
    gradient has not: the gradients of every weight's output, captured for the W pass (torch's
    `stage_backward_input` saves the intermediates' grads in `param_groups`): q, k, v, the attention
    projection, the MLP's f-wide outputs and its down projection per block, the logits on the last stage."""
    per_token = (q + 2 * kv + 2 * h + (2 if gated else 1) * f) * blocks + last * vocab
    return pending * act_bytes * tokens * per_token / tp


def communicator_count(*, dp: Num, tp: Num, pp: int, cp: Num, ep: Num = 1) -> Num:
    """Process groups with more than one rank a GPU communicates in: the dp x cp replicas (data
    parallelism), tp, pp, cp (attention) and, with experts, ep and the experts' own data-parallel group."""
    return (dp * cp > 1) * 1 + (tp > 1) * 1 + (pp > 1) * 1 + (cp > 1) * 1 + (ep > 1) * (1 + (dp * cp > ep))


def context_bytes(mem: StackMemorySpec, *, on_cpu: bool, framework_bytes: float, groups: Num) -> Num:
    """Device memory outside the caching allocator: CUDA context + NCCL buffers per communicator (an
    explicit `framework_bytes`, e.g. 0 from a CPU profile, replaces both); 0 on a CPU host."""
    if on_cpu:
        return 0.0 * groups
    if framework_bytes >= 0:   # a calibration or the stack set it
        return framework_bytes + 0.0 * groups
    if mem.framework_bytes is not None:
        return mem.framework_bytes + 0.0 * groups
    return mem.cuda_context_bytes + mem.nccl_bytes_per_group * groups


def reserved_bytes(allocated: Num, hole: Num, mem: StackMemorySpec, *, on_cpu: bool) -> Num:
    """The caching allocator's peak reservation for an allocated peak."""
    if on_cpu:
        return allocated
    return allocated * (1 + mem.allocator_reserve_fraction) + hole
