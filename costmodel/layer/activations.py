"""Activation bytes one block keeps for one micro-batch, as the software stack's kernels keep them.

A stack's file lists, per precision mode (`autocast`, `half`, `fp32`; `costmodel.specs.stack.PRECISION_MODES`),
the tensors autograd saves per token under each recomputation mode (`ActivationTable`): e.g. paraplan's
executor under CUDA autocast keeps the fp32 residual stream at both norms, a 16-bit copy of the input of
every linear (autocast casts it per op), Q, the repeated K/V and the output of scaled-dot-product
attention with its fp32 log-sum-exp, the attention output's transposed copy, and the MLP's f-wide
tensors. A mode without a table falls back to Korthikanti et al. 2022, Table 2 (`layer_activation_bytes`,
Megatron's fused kernels), which is also what cross-attention blocks use.

Sharding: h-wide tensors live in the sequence-parallel region (divided by tp only with sequence
parallelism, Korthikanti sec. 4.2.2); q, kv, f and per-head tensors are split over tp. Without a
flash kernel the attention probabilities (softmax output and its input to the value product, 2 x 16-bit
per score) replace the per-head log-sum-exp (Korthikanti Table 2's 5as term without dropout).
All functions are numpy-broadcastable in their numeric arguments."""

from __future__ import annotations

from typing import Any

from ..specs.stack import ActivationTable, SavedTensor, StackSpec
from .memory import DTYPE_BYTES, layer_activation_bytes
from .params import ModelShape

__all__ = ["precision_mode", "activation_table", "saved_bytes", "table_block_bytes", "block_activation_bytes",
           "head_activation_bytes"]

Num = Any
RECOMPUTE_KEYS = ("none", "selective", "full")


def precision_mode(stack: StackSpec | None, dtype: str, *, fsdp: bool) -> str:
    """'fp32' for fp32 training, else 'autocast' when the stack's weights (for FSDP-wrapped plans its
    `fsdp_weights`) are autocast's, else 'half'."""
    if DTYPE_BYTES[dtype] >= 4:
        return "fp32"
    if stack is None:
        return "half"
    mem = stack.memory
    weights = (mem.fsdp_weights or mem.weights) if fsdp else mem.weights
    return "autocast" if weights == "autocast" else "half"


def activation_table(stack: StackSpec | None, mode: str) -> ActivationTable | None:
    """The stack's table for `mode`, or None (Korthikanti's formula applies)."""
    return None if stack is None else stack.memory.activations.get(mode)


def saved_bytes(entry: SavedTensor, shape: ModelShape) -> float:
    """Bytes per token per width element of one table entry for this model (gated / RMSNorm variants)."""
    if shape.gated and entry.gated_bytes is not None:
        return entry.gated_bytes
    if shape.norm_weights == 1 and entry.rmsnorm_bytes is not None:
        return entry.rmsnorm_bytes
    return entry.bytes


def _widths(shape: ModelShape) -> dict[str, int]:
    return {"h": shape.h, "q": shape.q_width, "kv": shape.kv_width, "f": shape.f, "heads": shape.a}


def _entries_bytes(entries: dict[str, SavedTensor], shape: ModelShape, tokens: Num, *, tp: Num, seq_shard: Num,
                   flash: bool) -> Num:
    """Sum over `entries` of tokens x bytes x width, h-wide ones / seq_shard, the others / tp (per-head
    entries only with a flash kernel)."""
    widths = _widths(shape)
    replicated = sharded = 0.0
    for entry in entries.values():
        if entry.width == "heads" and not flash:
            continue
        per_token = saved_bytes(entry, shape) * widths[entry.width]
        if entry.width == "h":
            replicated = replicated + per_token
        else:
            sharded = sharded + per_token
    return tokens * (replicated / seq_shard + sharded / tp)


def table_block_bytes(table: ActivationTable, shape: ModelShape, b: Num, s: Num, *, tp: Num, sp: Num,
                      recompute_code: int, flash: bool, act_bytes: int) -> Num:
    """Bytes one block keeps per micro-batch of b sequences of s local tokens under recomputation mode
    `recompute_code` (0 none, 1 selective, 2 full; a plain int), from `table`."""
    seq_shard = 1 + sp * (tp - 1)
    entries = getattr(table, RECOMPUTE_KEYS[recompute_code])
    out = _entries_bytes(entries, shape, b * s, tp=tp, seq_shard=seq_shard, flash=flash)
    if recompute_code == 0 and not flash:     # attention probabilities (no flash kernel)
        out = out + 2 * act_bytes * shape.a * b * s * s / tp
    return out


def block_activation_bytes(stack: StackSpec | None, mode: str, shape: ModelShape, b: Num, s: Num, *, tp: Num,
                           sp: Num, recompute_code: Num, flash: bool, act_bytes: int, cross: bool = False) -> Num:
    """Activation bytes of one block and micro-batch: the stack's table for `mode`, else Korthikanti's
    Table 2. `recompute_code` may be an array (0 none / 1 selective / 2 full)."""
    table = None if cross else activation_table(stack, mode)
    if table is None:
        return layer_activation_bytes(shape, b, s, tp=tp, sp=sp, recompute_code=recompute_code, flash=flash,
                                      act_bytes=act_bytes, cross=cross)
    if not hasattr(recompute_code, "shape"):
        return table_block_bytes(table, shape, b, s, tp=tp, sp=sp, recompute_code=int(recompute_code), flash=flash,
                                 act_bytes=act_bytes)
    out = 0.0
    for code in range(3):
        part = table_block_bytes(table, shape, b, s, tp=tp, sp=sp, recompute_code=code, flash=flash,
                                 act_bytes=act_bytes)
        out = out + (recompute_code == code) * part
    return out


def head_activation_bytes(stack: StackSpec | None, mode: str, shape: ModelShape, tokens: Num, *, tp: Num,
                          sp: Num, act_bytes: int) -> Num:
    """What the last stage keeps for its final norm and the head's input, per micro-batch: the table's
    `head` entries, else the final norm's and the head's 16-bit inputs (2 x act_bytes x h per token)."""
    seq_shard = 1 + sp * (tp - 1)
    table = activation_table(stack, mode)
    if table is None or not table.head:
        return 2 * act_bytes * tokens * shape.h / seq_shard
    return _entries_bytes(table.head, shape, tokens, tp=tp, seq_shard=seq_shard, flash=True)
