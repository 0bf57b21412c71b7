"""A-priori constants of worker processes on a CPU host: what the cost model needs
beyond a profile's curves to predict the executor on the machine `paraplan profile` measured. Each
constant is a measurement of the profile (`CalibrationProfile.host`) or a documented property of the
executor; nothing is fitted to validation runs.

On a GPU host none (memory is compared as allocated bytes; the CUDA context stays in the device peak).
On a CPU host (one process per 'GPU', Gloo), with share = min(1, cores / (procs * worker_threads)) /
inflation, the share of a core each worker gets (torchrun gives each of several workers 1 thread, a
single worker all cores; `inflation` = how much more CPU a block costs while `procs` workers run at
once, the profile's concurrency benchmark, `cpu_inflation`):
- `measured_rate_scale` = share * worker_threads / profile_threads.
- `host_overlap_exponent` = 1: the thread that issues an op also runs it, so host time adds to compute.
- `host_op_s`: the profile's host seconds of a plain block's forward + backward at a few tokens / the
  ops the cost model counts for it (`block_host_ops`, 3 passes) / share.
- `host_tp_factor`, `host_sp_factor`, `host_full_recompute_factor`, `host_selective_recompute_factor`:
  measured ratios of a TP (DTensor), TP+SP and recomputed block's host time to a plain block's, per op.
- `host_tp_token_s`, `host_sp_token_s`: a TP block's measured extra CPU per token / share.
- `host_ddp_block_s`, `host_fsdp_block_s`, `host_fsdp_reshard_block_s`: the data-parallel wrapper's
  extra CPU per block and step, measured with the profile's largest worker count running at once (its
  inflation included), / the core share.
- `host_optimizer_tensor_s`, `host_optimizer_tp_tensor_s`, `host_optimizer_sharded_tensor_s`,
  `optimizer_param_s`: the measured AdamW step per tensor (plain, TP, FSDP2) and per parameter / share.
- `overlap_grad_reduce` = 0 when the workers occupy every core: Gloo's reduction needs the CPU.
- `step_overhead_s`: the executor's per-step scalar all-reduces (target-token count, loss, gradient
  norm: 3) at the profile's smallest measured all-reduce of `procs` ranks.

`with_host_terms` applies them to a profile (its own constants win), which is what `estimate` /
`search` / the CLI's `--calibration` use for a CPU profile."""

from __future__ import annotations

import os
from typing import Any

from ..catalog import list_models, load_model
from ..layer.compute import DEFAULT_EFFICIENCY, EfficiencyModel, block_host_ops
from ..layer.context import stack_kernels
from ..layer.params import model_shape
from ..stacks import get_stack
from .constants import MEASURED_RATE_SCALE

__all__ = ["host_constants", "with_constants", "with_host_terms", "cpu_inflation", "step_sync_s", "STEP_SCALAR_ALL_REDUCES"]

STEP_SCALAR_ALL_REDUCES = 3
"""Scalar all-reduces per optimizer step in `executor.engine.Engine.train_step`: the target-token
count, the loss, and the global gradient norm (`executor.grads`)."""


def host_constants(profile: Any, *, procs: int, cores: int | None = None) -> dict[str, float]:
    """The a-priori constants (module docstring) of `procs` worker processes on a host of `cores` cores
    (default: this one) for `profile` (a CalibrationProfile)."""
    if procs < 1:
        raise ValueError(f"procs={procs}: need at least 1")
    if profile.device.lower() != "cpu":
        return {}
    cores = cores or os.cpu_count() or 1
    worker_threads = 1 if procs > 1 else cores
    host = getattr(profile, "host", None)
    core_share = min(1.0, cores / (procs * worker_threads))
    host_share = core_share / cpu_inflation(host, procs)
    out: dict[str, float] = {
        MEASURED_RATE_SCALE: host_share * worker_threads / max(1, profile.threads or 1),
        "framework_bytes": 0.0,
        "host_overlap_exponent": 1.0,
    }
    if procs * worker_threads >= cores:
        out["overlap_grad_reduce"] = 0.0
    if host is not None:
        out.update(_block_terms(host, host_share, getattr(profile, "model", None)))
        for name, value in (("host_ddp_block_s", host.ddp_block_s), ("host_fsdp_block_s", host.fsdp_zero2_block_s),
                            ("host_fsdp_reshard_block_s", host.fsdp_zero3_block_s)):
            if value is not None:
                out[name] = value / core_share  # measured with the workers running at once
        for name, value in (("host_tp_token_s", host.tp_token_s), ("host_sp_token_s", host.tp_sp_token_s),
                            ("host_optimizer_tensor_s", host.optimizer_tensor_s),
                            ("host_optimizer_tp_tensor_s", host.optimizer_tp_tensor_s),
                            ("host_optimizer_sharded_tensor_s", host.optimizer_sharded_tensor_s),
                            ("optimizer_param_s", host.optimizer_param_s)):
            if value is not None:
                out[name] = value / host_share
    sync_s, _ = step_sync_s(profile, procs=procs)
    if sync_s > 0:
        out["step_overhead_s"] = sync_s
    return out


def executor_efficiency(model: str | None) -> EfficiencyModel:
    """The constants of the block a CPU profile times: the executor's (stack `paraplan`) in fp32 for the
    profile's model (its element-wise kernels depend on RoPE, GQA and gating), so that host seconds per
    block / the ops counted here, times the ops counted for a plan, gives back the measured block."""
    if model is None or model not in list_models():
        return DEFAULT_EFFICIENCY
    eff, _ = stack_kernels(DEFAULT_EFFICIENCY, get_stack("paraplan"), model_shape(load_model(model)), "fp32")
    return eff


def _block_terms(host: Any, host_share: float, model: str | None = None) -> dict[str, float]:
    """host_op_s and the measured TP / SP / recompute host factors of a HostPoint timed on `model`."""
    eff = executor_efficiency(model)
    ops = {name: block_host_ops(eff, cross=False, flash=True, tp=tp, sp=sp)
           for name, tp, sp in (("plain", 1, 0), ("tp", 2, 0), ("tp_sp", 2, 1))}
    per_op = host.block_s / (3 * ops["plain"])
    out = {"host_op_s": per_op / host_share}
    if host.block_tp_s:
        out["host_tp_factor"] = host.block_tp_s / (3 * ops["tp"]) / per_op
        if host.block_tp_sp_s:
            out["host_sp_factor"] = (host.block_tp_sp_s / ops["tp_sp"]) / (host.block_tp_s / ops["tp"])
    if host.block_full_recompute_s:
        out["host_full_recompute_factor"] = host.block_full_recompute_s / host.block_s
    if host.block_selective_recompute_s:
        out["host_selective_recompute_factor"] = host.block_selective_recompute_s / host.block_s
    return out


def with_constants(profile: Any, constants: dict[str, float]) -> Any:
    """`profile` with `constants` under its own (a profile's fitted constants win)."""
    return profile.model_copy(update={"constants": {**constants, **profile.constants}})


def with_host_terms(profile: Any, *, procs: int, cores: int | None = None) -> Any:
    """A CPU `profile` with `host_constants` for `procs` workers (`with_constants`); any other profile
    (a GPU's, None) as it is: there the CUDA context and the GPU's own rates stand."""
    if profile is None or profile.device.lower() != "cpu":
        return profile
    return with_constants(profile, host_constants(profile, procs=procs, cores=cores))


def cpu_inflation(host: Any, procs: int) -> float:
    """How much more CPU a block costs while `procs` single-thread workers run at once than alone
    (the profile's concurrency benchmark; context switches and shared caches), at least 1; 1 when the
    profile did not measure `procs` workers."""
    if host is None or not host.block_cpu_s or procs not in (host.concurrent_block_cpu_s or {}):
        return 1.0
    return max(1.0, host.concurrent_block_cpu_s[procs] / host.block_cpu_s)


def step_sync_s(profile: Any, *, procs: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the executor's scalar all-reduces per step at `procs` ranks, from the
    profile's smallest all-reduce point ((0, 0) when not measured; CPU 0 when its CPU was not kept)."""
    pts = [p for p in getattr(profile, "collectives", ()) if p.op == "all_reduce" and p.group_size == procs]
    if procs < 2 or not pts:
        return 0.0, 0.0
    small = min(pts, key=lambda p: p.nbytes)
    return STEP_SCALAR_ALL_REDUCES * small.time_s, STEP_SCALAR_ALL_REDUCES * (small.cpu_s or 0.0)
