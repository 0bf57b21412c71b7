"""Deterministic weight initialization that gives every plan the same weights.

Each parameter's full value is drawn from its own generator, seeded by (seed, canonical name), so the
values do not depend on which layers a rank holds, in which order, or how the parameter is sharded.
A sharded parameter (DTensor: TP, FSDP2, or both) keeps the slice its placements give this rank
(`distribute_tensor(..., src_data_rank=None)` slices locally, no communication)."""

from __future__ import annotations

import zlib

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from costmodel.specs import ModelSpec

from .model import param_init

__all__ = ["canonical_name", "init_weights", "param_seed"]

_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.", "module.", "_fsdp_wrapped_module.")


def canonical_name(name: str) -> str:
    """The parameter's name in the plain model: wrapper prefixes (checkpoint_wrapper, DDP, compile) removed."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def param_seed(seed: int, name: str) -> int:
    """A 63-bit seed from the run seed and the canonical parameter name (stable across processes)."""
    return (seed * 0x9E3779B1 + zlib.crc32(name.encode())) % (2**63 - 1)


@torch.no_grad()
def init_weights(part: nn.Module, spec: ModelSpec, *, seed: int) -> None:
    """Give every parameter of `part` (materialized, possibly sharded) its deterministic value, and
    recompute its non-persistent buffers."""
    for name, param in part.named_parameters():
        cname = canonical_name(name)
        gen = torch.Generator(device="cpu").manual_seed(param_seed(seed, cname))
        full = param_init(cname, tuple(param.shape), spec, generator=gen).to(param.dtype)
        if isinstance(param, DTensor):
            local = distribute_tensor(full.to(param.device), param.device_mesh, param.placements,
                                      src_data_rank=None).to_local()
            param.to_local().copy_(local)
        else:
            param.copy_(full)
    for module in part.modules():
        reset = getattr(module, "reset_buffers", None)
        if callable(reset):
            reset()
