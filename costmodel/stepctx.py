"""What a step is priced from: `StepContext` (fixed for a model, cluster and training spec) and
`Knobs` (one plan as numbers, or many plans sharing dp/tp/pp/cp as arrays), with the two helpers
that let one formula serve numbers and arrays (`vmax`, `any_set`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .catalog import check_dtype
from .compute import EfficiencyModel, Rates
from .constants import efficiency_with_constants
from .memory import DTYPE_BYTES, optimizer_bytes_per_param, weight_bytes_per_param
from .params import (
    ModelShape,
    embedding_params,
    end_tensors,
    layer_params,
    layer_tensors,
    lm_head_params,
    model_shape,
)
from .specs import ClusterSpec, ModelSpec, TrainingSpec

__all__ = ["StepContext", "Knobs", "build_context", "vmax", "any_set"]

Num = Any


def vmax(a: Num, b: Num) -> Num:
    """max() for numbers, np.maximum for arrays."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.maximum(a, b)
    return a if a >= b else b


@dataclass(frozen=True)
class StepContext:
    """Everything about a (model, cluster, training) triple that no plan knob changes."""

    shape: ModelShape
    seq_len: int
    global_batch: int
    act_bytes: int
    weight_bytes: int
    grad_bytes: int
    opt_bytes: int
    flash: bool
    rates: Rates
    layer_params_enc: int
    layer_params_dec: int
    vocab_params: int          # token embedding V*h (vocabulary-parallel)
    replicated_embed_params: int  # learned positions / relative biases (replicated over TP)
    head_extra_params: int     # final norms + untied output projection
    hbm_bytes: float
    peak_flops_per_s: float
    memo: dict = field(default_factory=dict, compare=False, repr=False)  # per-context cache (step FLOPs)

    @cached_property
    def eff(self) -> EfficiencyModel:
        return self.rates.eff

    @cached_property
    def layer_tensors(self) -> tuple[int, int]:
        """Parameter tensors of a block without and with cross-attention."""
        return layer_tensors(self.shape), layer_tensors(self.shape, cross=True)

    @cached_property
    def end_tensors(self) -> tuple[int, int]:
        """Parameter tensors of the embedding and the head."""
        return end_tensors(self.shape)


def build_context(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, *,
                  efficiency: EfficiencyModel, calibration: Any = None) -> StepContext:
    """The StepContext of a model on a cluster's GPU for a training spec."""
    efficiency = efficiency_with_constants(efficiency, calibration)  # closed-loop (issue 6): fitted constants
    shape = model_shape(model)
    gpu = cluster.gpu
    check_dtype(gpu, training.dtype)
    peak = gpu.peak_flops(training.dtype)
    rates = Rates(peak, gpu.hbm_bw_bytes_per_s, efficiency, training.dtype, calibration)
    embed = embedding_params(shape)
    return StepContext(
        shape=shape, seq_len=training.seq_len, global_batch=training.global_batch_size,
        act_bytes=DTYPE_BYTES[training.dtype], weight_bytes=weight_bytes_per_param(training.dtype),
        grad_bytes=DTYPE_BYTES[training.grad_dtype or training.dtype],
        opt_bytes=optimizer_bytes_per_param(training.dtype, training.optimizer),
        flash=training.flash_attention, rates=rates,
        layer_params_enc=layer_params(shape), layer_params_dec=layer_params(shape, cross=True),
        vocab_params=shape.vocab * shape.h, replicated_embed_params=embed - shape.vocab * shape.h,
        head_extra_params=lm_head_params(shape), hbm_bytes=gpu.hbm_bytes, peak_flops_per_s=peak,
    )


@dataclass
class Knobs:
    """One plan (numbers) or many plans (arrays). `pp` is always a plain int; dp, tp, cp are ints
    (plans sharing the degrees, one CommModel) or per-row int arrays (then the comm is a
    `costmodel.comm_grouped.GroupedComm`, each row priced by its own group's CommModel).
    Codes: schedule 0 gpipe / 1 1f1b / 2 interleaved-1f1b / 3 zero-bubble; recompute 0/1/2; sp 0/1."""

    dp: Num
    tp: Num
    pp: int
    cp: Num
    mb: Num
    v: Num
    schedule: Num
    zero: Num
    recompute: Num
    sp: Num


def any_set(flag: Num) -> bool:
    """Whether a 0/1 flag (number or array) is set anywhere: skip work no plan needs."""
    return bool(np.any(flag)) if isinstance(flag, np.ndarray) else bool(flag)
