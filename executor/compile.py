"""`torch.compile` per Transformer block, and async tensor parallelism on top of it.

Order (torchtitan's `apply_compile`): after tensor parallelism and activation checkpointing, before
FSDP2, each block is compiled in place (`nn.Module.compile`, so parameter names and checkpoints are
unchanged). All blocks share one graph: the parameters are graph inputs, so a model compiles one
block's forward and backward, not L of them. Inductor fuses the norms, rotary embedding, activation
and residual adds into a few kernels (on CUDA Triton, on CPU its C++ backend with the host's compiler).

Async TP (Wang et al. 2024, "Overlap communication with dependent computation via decomposition";
torch's micro-pipeline TP pass): with sequence parallelism the all-gather before a column-parallel
matmul and the reduce-scatter after a row-parallel one are split into chunks whose transfers run
while the previous chunk's matmul computes (symmetric memory, CUDA/NCCL only). It is an inductor pass,
so it needs compiled blocks.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from costmodel.specs import ParallelPlan

__all__ = ["compile_unsupported", "default_compile", "apply_compile", "async_tp_applies", "enable_async_tp"]


def compile_unsupported(plan: ParallelPlan) -> str | None:
    """Why blocks of `plan` cannot be compiled (one line naming the field and the fix), or None. The
    zero-bubble schedule splits each backward into an input-gradient and a weight-gradient pass (Qi et
    al. 2024); a compiled block's backward is one graph that yields both, so it would run twice."""
    if plan.pp > 1 and plan.schedule == "zero-bubble":
        return ("compile: the zero-bubble schedule splits each block's backward in two, which a compiled "
                "block cannot; use --no-compile or another schedule")
    return None


def default_compile(device: torch.device, plan: ParallelPlan | None = None) -> bool:
    """Compile by default on CUDA (unless the plan cannot be compiled); on CPU eager is the default (the
    first step would spend ~30 s in inductor's C++ compiler on this project's 2-core hosts, longer than
    most CPU runs)."""
    return device.type == "cuda" and (plan is None or compile_unsupported(plan) is None)


def async_tp_applies(plan: ParallelPlan, device: torch.device, *, compiled: bool) -> bool:
    """Async TP needs tp > 1 with sequence parallelism (all-gather/reduce-scatter around the matmuls;
    plain TP's all-reduces are not decomposed), compiled blocks and CUDA (symmetric memory)."""
    return plan.tp > 1 and plan.sequence_parallel and compiled and device.type == "cuda"


def enable_async_tp(tp_mesh: DeviceMesh) -> None:
    """Turn on inductor's micro-pipeline TP pass for the TP group. torch 2.11 needs the group registered
    for symmetric memory (`enable_symm_mem_for_group`); 2.13 registers it itself and deprecates the call,
    which still works, so it is made quietly when present."""
    import torch._inductor.config as inductor_config

    try:
        from torch.distributed._symmetric_memory import enable_symm_mem_for_group
    except ImportError:  # a torch without symmetric memory: the pass would not match any pattern
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        enable_symm_mem_for_group(tp_mesh.get_group().group_name)
    inductor_config._micro_pipeline_tp = True


def apply_compile(part: nn.Module) -> int:
    """Compile each block of `part.layers` in place (fullgraph: a graph break is a bug to fix, not a
    silent slowdown). Returns the number of blocks compiled."""
    # Recompute replays a block's forward in the backward; compiled regions cannot replay Python side
    # effects, and the blocks have none to replay (torchtitan sets the same flag, where torch has it).
    if hasattr(torch._dynamo.config, "skip_fwd_side_effects_in_bwd_under_checkpoint"):
        torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint = True
    blocks = list(part.layers.values())
    for block in blocks:
        block.compile(fullgraph=True)
    return len(blocks)
