"""`measure_host`: every host benchmark of a profile (costmodel.calibration.profile.host for one process,
costmodel.calibration.profile.host_dist for several, costmodel.calibration.profile.optimizer for AdamW)
gathered into one `HostPoint`."""

from __future__ import annotations

import torch

from ...specs import ModelSpec
from ..profile_spec import HostPoint
from .host import TP_RANKS, RefBlock, _fwd_bwd, _input, block_host_seconds, count_aten_ops
from .host_dist import measure_concurrency, measure_fsdp, measure_tp_host
from .optimizer import measure_optimizer

__all__ = ["measure_host"]


def measure_host(spec: ModelSpec, *, tokens: int = 8, layers: int = 4, repeats: int = 10, tp: bool = True,
                 procs: tuple[int, ...] = (), concurrency_tokens: int = 128, tp_tokens: int = 512,
                 timeout_s: float = 120.0) -> HostPoint:
    """Host seconds per block forward + backward of `spec`'s block on `tokens` tokens, with 1 thread
    (what each of several torchrun workers gets): plain, recomputed (full / selective) and, with
    `tp`, tensor parallel over 2 Gloo processes (without / with sequence parallelism). For each count
    in `procs`, also the CPU seconds per block on `concurrency_tokens` tokens while that many
    processes run at once, and the same alone (costmodel.calibration.profile.host_dist). TP's per-token cost is
    the slope between `tokens` and `tp_tokens` (a wide span: at 128 tokens it drowned in noise). The
    AdamW step is timed on plain, TP and FSDP2-sharded parameters (costmodel.calibration.profile.optimizer)."""
    if tokens < TP_RANKS or tokens % TP_RANKS:
        raise ValueError(f"tokens={tokens}: must be a positive multiple of {TP_RANKS} (sequence shards)")
    concurrency_tokens = min(concurrency_tokens, spec.max_seq_len)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        blocks = [RefBlock(spec) for _ in range(layers)]
        x = _input(spec, tokens)
        plain, full, selective = block_host_seconds(blocks, x, recompute=("none", "full", "selective"),
                                                    repeats=repeats)
        ops = count_aten_ops(lambda: _fwd_bwd(blocks[:1], x, "none"))
    finally:
        torch.set_num_threads(threads)
    opt_tensor_s, opt_param_s = measure_optimizer(blocks, repeats=repeats)
    tp_times = measure_tp_host(spec, layers=layers, tokens=tokens, repeats=repeats, timeout_s=timeout_s,
                               big_tokens=max(tp_tokens, tokens)) if tp else {}
    counts = sorted({n for n in procs if n > 1})
    runs = {n: measure_concurrency(spec, procs=n, layers=layers, tokens=concurrency_tokens, repeats=repeats,
                                   timeout_s=timeout_s) for n in ([1, *counts] if counts else [])}
    alone = runs.pop(1, None)
    together = runs
    fsdp = measure_fsdp(spec, procs=max(counts), layers=layers, tokens=concurrency_tokens, repeats=repeats,
                        timeout_s=timeout_s) if counts else {}
    return HostPoint(tokens=tokens, threads=1, block_s=plain, block_full_recompute_s=full,
                     block_selective_recompute_s=selective, aten_ops_per_block=ops,
                     block_tp_s=_at_speed(tp_times, "tp", plain), block_tp_sp_s=_at_speed(tp_times, "tp_sp", plain),
                     tp_group_size=TP_RANKS if tp else None, tp_token_s=tp_times.get("tp_token_s"),
                     tp_sp_token_s=tp_times.get("tp_sp_token_s"),
                     concurrency_tokens=concurrency_tokens if together else None,
                     block_cpu_s=alone if together else None, concurrent_block_cpu_s=together,
                     fsdp_procs=max(counts) if counts else None, ddp_block_s=fsdp.get("ddp"),
                     fsdp_zero2_block_s=fsdp.get("zero2"),
                     fsdp_zero3_block_s=fsdp.get("zero3"), optimizer_tensor_s=opt_tensor_s,
                     optimizer_param_s=opt_param_s,
                     optimizer_tp_tensor_s=_per_tensor(tp_times, "opt_tp", opt_param_s),
                     optimizer_sharded_tensor_s=_per_tensor(fsdp, "opt_sharded", opt_param_s))


def _at_speed(raw: dict[str, float], key: str, plain_s: float) -> float | None:
    """A TP block's host seconds at the speed of this process's plain measurement: its ratio to the plain
    block timed in the same rounds of the TP benchmark x `plain_s` (the two benchmarks run seconds
    apart, and this machine's speed drifts by tens of percent between them)."""
    if key not in raw:
        return None
    return raw[key] / raw["plain"] * plain_s


def _per_tensor(raw: dict[str, float], key: str, param_s: float) -> float | None:
    """Per-tensor seconds of a distributed AdamW measurement: (step - local parameters x the plain
    per-parameter cost) / tensors; None when not measured."""
    if key not in raw:
        return None
    return max(0.0, raw[key] - raw[f"{key}_params"] * param_s) / raw[f"{key}_tensors"]
