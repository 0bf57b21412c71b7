"""The optimizer step's cost on this host: seconds per parameter tensor (the host's per-tensor work in
the multi-tensor AdamW the executor runs) and per parameter (the element-wise passes over weights,
gradients and both moments; Loshchilov & Hutter 2019), measured where each dominates: many 1-element
tensors, then a stack of real blocks. `optimizer_step_seconds` also times DTensor parameters (tensor
parallel or FSDP-sharded) inside the distributed host benchmarks (costmodel.calibration.profile.host_dist)."""

from __future__ import annotations

import time

import torch

from ...specs.optimizer import ADAMW_WEIGHT_DECAY, adamw_param_groups

__all__ = ["optimizer_step_seconds", "measure_optimizer"]

def optimizer_step_seconds(params: list[torch.Tensor], *, repeats: int = 10) -> float:
    """CPU seconds (`time.process_time`) of one multi-tensor AdamW step over `params` (gradients set to
    ones): the fastest of `repeats` steps after a first one that creates the moments."""
    for p in params:
        p.grad = torch.ones_like(p)
    opt = torch.optim.AdamW(adamw_param_groups(params, weight_decay=ADAMW_WEIGHT_DECAY), lr=1e-4, foreach=True)
    opt.step()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.process_time()
        opt.step()
        best = min(best, time.process_time() - t0)
    return best


def measure_optimizer(blocks: list[torch.nn.Module], *, repeats: int = 10) -> tuple[float, float]:
    """(seconds per parameter tensor, seconds per parameter) of an AdamW step, 1 thread: as many
    1-element tensors as `blocks` hold give the per-tensor cost; the blocks' own parameters, minus that,
    the per-parameter cost."""
    params = [p for blk in blocks for p in blk.parameters()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny = optimizer_step_seconds([torch.zeros(1, requires_grad=True) for _ in params], repeats=repeats)
        real = optimizer_step_seconds([p.detach().clone().requires_grad_() for p in params], repeats=repeats)
    finally:
        torch.set_num_threads(threads)
    per_tensor = tiny / len(params)
    return per_tensor, max(0.0, real - tiny) / sum(p.numel() for p in params)
