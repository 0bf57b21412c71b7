"""Memory-bound (element-wise) kernels of one block, as the stack runs them.

A stack lists the element-wise kernel classes of a block's forward (`StackSpec.kernels.elementwise`:
norms, residual adds, activation, casts, copies, rotary embedding ...), each as kernels launched and
reads + writes ("passes") of one activation element per token over a width: the hidden state h (sharded
over TP only with sequence parallelism), the MLP intermediate f / tp, Q + K, Q + K + V or the attention
output (/ tp). Megatron-LM fuses them into 4 kernels moving (10 e + 2) h + 2 e f bytes per token
(Korthikanti et al. 2022, sec. 4: 2 LayerNorms, 2 bias-dropout-adds with 1-byte masks, a bias-GeLU);
eager PyTorch under autocast runs more of them, several in fp32 (the autocast op lists of
`torch.amp`: layer_norm and the residual stream of fp32 parameters stay fp32, every Linear input is
cast to 16 bits). The backward streams about twice the forward's bytes (`costmodel.layer.blocks`).
Numbers or numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..specs.stack import ElementwiseOp
from .params import ModelShape

__all__ = ["ElementwiseClass", "elementwise_classes", "elementwise_bytes", "profiled_elementwise_s",
           "BACKWARD_PER_FORWARD", "MEGATRON_ELEMENTWISE"]

Num = Any

MEGATRON_ELEMENTWISE: dict[str, ElementwiseOp] = {
    "norm": ElementwiseOp(kind="norm", kernels=2, passes=4, width="h"),
    "bias_dropout_add": ElementwiseOp(kind="add", kernels=2, passes=6, width="h", extra_bytes=2.0),
    "bias_activation": ElementwiseOp(kind="activation", kernels=0, passes=2, width="f", gated_passes=3),
}
"""The fused kernels of Megatron-LM's block (the default when a stack lists none): 2 LayerNorms (read +
write h), 2 bias-dropout-adds (read 2 h, write h, a 1-byte mask each) and a bias-GeLU folded into the
count of 4 kernels (read + write f; 3 f-wide tensors when gated)."""


@dataclass(frozen=True)
class ElementwiseClass:
    """One kernel class resolved for a model: name, kernels and bytes per token per width element
    (at 2-byte activations; scaled by act_bytes / 2), width key, and whether it applies."""

    name: str
    kind: str
    kernels: int
    passes: float
    extra_bytes: float
    width: str


def elementwise_classes(ops: dict[str, ElementwiseOp], shape: ModelShape) -> tuple[ElementwiseClass, ...]:
    """The stack's kernel classes that apply to this model (rotary ops only with RoPE, GQA copies only
    with fewer K/V heads than query heads, gated variants for SwiGLU/GeGLU)."""
    out = []
    for name, op in ops.items():
        if name.startswith("rope") and not shape.rope:
            continue
        if name.startswith("gqa") and shape.kv == shape.a:
            continue
        passes = op.gated_passes if (shape.gated and op.gated_passes is not None) else op.passes
        kernels = op.gated_kernels if (shape.gated and op.gated_kernels is not None) else op.kernels
        out.append(ElementwiseClass(name, op.kind, kernels, passes, op.extra_bytes, op.width))
    return tuple(out)


def _class_bytes(c: ElementwiseClass, shape: ModelShape, tokens: Num, *, tp: Num, seq_shard: Num, act_bytes: int,
                 cross: bool) -> Num:
    widths = {"h": shape.h / seq_shard, "f": shape.f / tp, "qk": (shape.q_width + shape.kv_width) / tp,
              "qkv": (shape.q_width + 2 * shape.kv_width) / tp, "q": shape.q_width / tp}
    rep = 2 if (cross and c.width == "h") else 1
    return rep * tokens * widths[c.width] * (c.passes * act_bytes + c.extra_bytes)


def elementwise_bytes(classes: tuple[ElementwiseClass, ...], shape: ModelShape, tokens: Num, *, tp: Num, seq_shard: Num,
                      act_bytes: int, cross: bool) -> tuple[Num, int]:
    """(bytes, kernels) of one block's forward element-wise kernels for `tokens` tokens on one GPU.
    A cross-attention block repeats the h-wide kernels of its second attention (norm, residual)."""
    total = 0.0 * tokens
    kernels = 0
    for c in classes:
        total = total + _class_bytes(c, shape, tokens, tp=tp, seq_shard=seq_shard, act_bytes=act_bytes, cross=cross)
        kernels += c.kernels
    return total, kernels + 2 * cross


BACKWARD_PER_FORWARD = 2.0
"""Backward seconds per forward second of an element-wise kernel whose backward was not measured: it
reads the output gradient and the saved input and writes the input gradient (twice the forward's traffic)."""


def profiled_elementwise_s(classes: tuple[ElementwiseClass, ...], shape: ModelShape, tokens: Num, calibration: Any, *,
                           tp: Num, seq_shard: Num, act_bytes: int, cross: bool, default_bw: float,
                           backward: bool = False) -> Num:
    """Forward (or, with `backward`, backward) seconds of the element-wise kernels priced per operator
    from a profile: each class's bytes at the bandwidth its operator reached on that many bytes per
    kernel (`CalibrationProfile.mem_op_bw_bytes_per_s`), classes whose operator was not measured at
    `default_bw`. The backward is the forward times the operator's measured backward / forward ratio
    (`mem_op_bwd_ratio`: autograd's backward of a norm is several kernels), `BACKWARD_PER_FORWARD`
    where the profile has none."""
    total = 0.0 * tokens
    for c in classes:
        nbytes = _class_bytes(c, shape, tokens, tp=tp, seq_shard=seq_shard, act_bytes=act_bytes, cross=cross)
        per_kernel = nbytes / max(c.kernels, 1)
        measured = calibration.has_mem_op(c.kind)
        bw = calibration.mem_op_bw_bytes_per_s(c.kind, per_kernel) if measured else None
        seconds = nbytes / (default_bw if bw is None else bw)
        if backward:
            ratio = calibration.mem_op_bwd_ratio(c.kind, per_kernel) if measured else None
            seconds = seconds * (BACKWARD_PER_FORWARD if ratio is None else ratio)
        total = total + seconds
    return total
