"""The reference model of any `ModelSpec`, by family: decoder and encoder Transformers (GPT, Llama,
BERT: `executor.model`) and encoder-decoders (T5: `executor.t5`), which shares the Transformer's
blocks and attribute names (`embed`, `layers` "0".."L-1", `norm`, `output`) so the plan is applied to
both alike."""

from __future__ import annotations

import torch
from torch import nn

from costmodel.specs import ModelSpec

from .model import build_model as build_transformer
from .t5 import T5

__all__ = ["build_model"]


def build_model(spec: ModelSpec, *, device: torch.device | str = "meta") -> nn.Module:
    """The model of `spec` on `device` (meta: no memory; initialize with `executor.init.init_weights`):
    a `T5` for encoder-decoder specs, else a `executor.model.Transformer`. ValueError names the field
    the executor cannot run."""
    if spec.arch == "encoder-decoder":
        with torch.device(device):
            return T5(spec)
    return build_transformer(spec, device=device)
