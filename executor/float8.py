"""float8 training (training dtype `fp8`): torchao's `Float8Linear` with dynamic tensorwise scaling.

Each block's linear layers run their three matmuls (output, input gradient, weight gradient) on fp8
tensor cores: inputs and weights in e4m3, output gradients in e5m2, each scaled by its own current
amax (dynamic scaling; Micikevicius et al. 2022, "FP8 Formats for Deep Learning", sec. 4), with bf16
everywhere else (autocast or FSDP2's bf16 parameters) and fp32 master weights. The vocabulary head
stays bf16 (torchtitan's default filter: its logits feed the softmax directly) and so does any linear
whose dimensions are not multiples of 16 (`torch._scaled_mm`'s requirement).

fp8 matmuls need compute capability 8.9 or newer (Ada, Hopper, Blackwell); anywhere else the run is
refused with one line instead of silently training in another precision. The conversion is applied
on the meta-device model before tensor parallelism, as torchtitan's model converters are.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

__all__ = ["MIN_CAPABILITY", "float8_unsupported", "float8_filter", "apply_float8"]

MIN_CAPABILITY = (8, 9)
"""Compute capability of the first GPUs with fp8 tensor cores (NVIDIA Ada/Hopper)."""
_HEAD = "output"


def float8_unsupported(device: torch.device | None = None) -> str | None:
    """Why fp8 training cannot run on `device` (default: this host's first GPU, or its CPU), as one
    line naming the field and the fix; None when it can."""
    if device is None:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device.type != "cuda":
        return ("dtype: fp8 training needs an NVIDIA GPU with compute capability >= 8.9 (Ada, Hopper, "
                f"Blackwell); this run is on {device.type.upper()}; use --dtype fp32 here, or bf16 on a GPU")
    cap = torch.cuda.get_device_capability(device)
    if cap < MIN_CAPABILITY:
        return (f"dtype: fp8 training needs compute capability >= 8.9; {torch.cuda.get_device_name(device)} "
                f"is {cap[0]}.{cap[1]}; use --dtype bf16")
    if importlib.util.find_spec("torchao") is None:
        return "dtype: fp8 training needs torchao; pip install 'paraplan[fp8]' (torchao>=0.18)"
    return None


def float8_filter(module: nn.Module, fqn: str) -> bool:
    """Convert a block's linear layers whose both dimensions are multiples of 16; keep the head."""
    if not isinstance(module, nn.Linear) or fqn.split(".")[-1] == _HEAD:
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def apply_float8(part: nn.Module, *, emulate: bool = False) -> int:
    """Swap `part`'s eligible `nn.Linear`s for torchao `Float8Linear`s (tensorwise dynamic scaling),
    in place; parameter names do not change. `emulate` runs the fp8 casts with plain matmuls (tests
    on CPU). Returns the number of layers converted."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    from torchao.float8.float8_linear import Float8Linear

    convert_to_float8_training(part, module_filter_fn=float8_filter, config=Float8LinearConfig(emulate=emulate))
    return sum(isinstance(m, Float8Linear) for m in part.modules())
