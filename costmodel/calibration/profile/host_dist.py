"""The host benchmarks that need several processes (costmodel.calibration.profile.host):

- `measure_tp_host`: host seconds of a tensor-parallel reference block over 2 Gloo ranks (torch's
  DTensor TP styles), without and with sequence parallelism, on a few tokens.
- `measure_concurrency`: CPU seconds of a reference block's forward + backward at a realistic token
  count when `n` processes run it at once, over the same with one process. On an oversubscribed host
  (more single-thread workers than cores) each process's work costs more CPU than alone: context
  switches and shared caches (the 'noisy neighbour' effect; Tang et al. 2011, "The impact of memory
  subsystem resource sharing on datacenter applications", ISCA). The ratio is what the cost model needs
  on top of the core share cores / procs.
- `measure_fsdp`: the extra CPU seconds per block and step that data parallelism adds over `n` ranks:
  DDP (bucketed all-reduce, Li et al. 2020, "PyTorch Distributed") and FSDP2 (per-block sharding, ZeRO-2/3;
  Zhao et al. 2023, "PyTorch FSDP": parameter all-gather, gradient reduce-scatter, the copies in and out
  of the flat buffers, and its hooks), collectives' CPU included.

Each benchmark spawns its ranks (torch.multiprocessing, spawn), times with `time.process_time` (the
process's own CPU work, insensitive to other users' load) and returns the slowest rank's figure."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ...specs import ModelSpec
from .dist_bench import _loopback_name, free_port, stop_processes
from .host import TP_RANKS, RefBlock, _apply_tp, _fwd_bwd, _input, block_host_seconds
from .optimizer import optimizer_step_seconds

__all__ = ["measure_tp_host", "measure_concurrency", "measure_fsdp"]


def _init(rank: int, world: int, port: int, timeout_s: float) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))


def _slowest(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def _optimizer_raw(key: str, blocks: list[torch.nn.Module], repeats: int) -> dict[str, float]:
    """AdamW step over `blocks`' (DTensor) parameters on every rank: {key: slowest rank's CPU s,
    key_tensors: parameter tensors, key_params: this rank's local parameters}."""
    params = [p for blk in blocks for p in blk.parameters()]
    dist.barrier()
    seconds = _slowest(optimizer_step_seconds(params, repeats=repeats))
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params)
    return {key: seconds, f"{key}_tensors": float(len(params)), f"{key}_params": float(local)}


def _tp_worker(rank: int, world: int, port: int, timeout_s: float, out: str, spec_json: str, layers: int,
               tokens: int, repeats: int, big_tokens: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    _init(rank, world, port, timeout_s)
    try:
        spec = ModelSpec.model_validate_json(spec_json)
        mesh = init_device_mesh("cpu", (world,))
        stacks = {}
        for mode in ("plain", "tp", "tp_sp"):
            blocks = [RefBlock(spec) for _ in range(layers)]
            if mode != "plain":
                for blk in blocks:
                    _apply_tp(blk, mesh, sp=mode == "tp_sp")
            for size in sorted({tokens, big_tokens}):
                stacks[(mode, size)] = (blocks, _input(spec, size // world if mode == "tp_sp" else size))
        best = dict.fromkeys(stacks, float("inf"))
        for _ in range(max(1, repeats)):  # interleaved rounds: machine drifts hit all alike
            for key, (blocks, x) in stacks.items():
                best[key] = min(best[key], block_host_seconds(blocks, x, repeats=1, sync=dist.barrier))
        result = {f"{mode}@{size}": _slowest(t) for (mode, size), t in best.items()}
        result.update(_optimizer_raw("opt_tp", stacks[("tp", tokens)][0], repeats))
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _concurrency_worker(rank: int, world: int, port: int, timeout_s: float, out: str, spec_json: str,
                        layers: int, tokens: int, repeats: int) -> None:
    _init(rank, world, port, timeout_s)
    try:
        spec = ModelSpec.model_validate_json(spec_json)
        blocks = [RefBlock(spec) for _ in range(layers)]
        x = _input(spec, tokens)
        _fwd_bwd(blocks, x, "none")
        dist.barrier()  # all ranks compute at once from here
        samples = []
        for _ in range(max(1, repeats)):
            t0 = time.process_time()
            _fwd_bwd(blocks, x, "none")
            samples.append(time.process_time() - t0)
        cpu = _slowest(statistics.median(samples) / layers)
        if rank == 0:
            Path(out).write_text(json.dumps({"block_cpu_s": cpu}))
    finally:
        dist.destroy_process_group()


def _fsdp_worker(rank: int, world: int, port: int, timeout_s: float, out: str, spec_json: str, layers: int,
                 tokens: int, repeats: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    _init(rank, world, port, timeout_s)
    try:
        spec = ModelSpec.model_validate_json(spec_json)
        mesh = init_device_mesh("cpu", (world,))
        stacks = {}
        for mode in ("plain", "ddp", "zero2", "zero3"):
            blocks = [RefBlock(spec) for _ in range(layers)]
            if mode == "ddp":  # one DDP module over the stack: bucketed gradient all-reduce
                from torch.nn.parallel import DistributedDataParallel

                blocks = [DistributedDataParallel(torch.nn.Sequential(*blocks))]  # no buffers to sync
            elif mode != "plain":  # FSDP2 per block; ZeRO-3 re-gathers the parameters for the backward
                for blk in blocks:
                    fully_shard(blk, mesh=mesh, reshard_after_forward=mode == "zero3")
            stacks[mode] = (blocks, _input(spec, tokens))
            _fwd_bwd(blocks, stacks[mode][1], "none")
        samples: dict[str, list[float]] = {m: [] for m in stacks}
        for _ in range(max(1, repeats)):  # interleaved rounds: machine drifts hit all modes alike
            for mode, (blocks, x) in stacks.items():
                dist.barrier()
                t0 = time.process_time()
                _fwd_bwd(blocks, x, "none")
                samples[mode].append(time.process_time() - t0)
        cpu = {m: _slowest(statistics.median(v) / layers) for m, v in samples.items()}
        result = {m: max(0.0, cpu[m] - cpu["plain"]) for m in ("ddp", "zero2", "zero3")}
        result.update(_optimizer_raw("opt_sharded", stacks["zero2"][0], repeats))
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _spawn(target: Callable[..., None], world: int, *args: Any, timeout_s: float) -> dict[str, float]:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", _loopback_name())
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"paraplan-host-{os.getpid()}-{free_port()}.json"
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, timeout_s, str(out), *args), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + timeout_s
        for p in procs:
            p.join(timeout=max(1.0, deadline - time.monotonic()))
        codes = [p.exitcode for p in procs]
        if codes != [0] * world or not out.is_file():
            raise RuntimeError(f"host benchmark ({target.__name__}): ranks exited with {codes}")
        return json.loads(out.read_text())
    finally:
        stop_processes(procs)
        out.unlink(missing_ok=True)


def measure_tp_host(spec: ModelSpec, *, layers: int, tokens: int, repeats: int, timeout_s: float,
                    big_tokens: int | None = None) -> dict[str, float]:
    """Host seconds per block forward + backward over TP_RANKS processes on `tokens` tokens: {'tp': s,
    'tp_sp': s, 'plain': s} (a plain block timed in the same interleaved rounds: the ratios are free of
    the machine's drift between benchmarks); with `big_tokens` also the extra CPU per token a TP block costs over half a plain block
    (what grows with the activations: redistributions, the collectives' copies and waits), between the
    two sizes: {'tp_token_s': s, 'tp_sp_token_s': s}; and 'opt_tp' (+ '_tensors', '_params'): an AdamW
    step over the TP blocks' DTensor parameters."""
    big = big_tokens or tokens
    r = _spawn(_tp_worker, TP_RANKS, spec.model_dump_json(), layers, tokens, repeats, big, timeout_s=timeout_s)
    out = {"tp": r[f"tp@{tokens}"], "tp_sp": r[f"tp_sp@{tokens}"], "plain": r[f"plain@{tokens}"]}
    out.update({k: v for k, v in r.items() if k.startswith("opt_")})
    if big > tokens:
        for mode in ("tp", "tp_sp"):
            def excess(size: int, mode: str = mode) -> float:
                return r[f"{mode}@{size}"] - r[f"plain@{size}"] / TP_RANKS
            out[f"{mode}_token_s"] = max(0.0, (excess(big) - excess(tokens)) / (big - tokens))
    return out


def measure_concurrency(spec: ModelSpec, *, procs: int, layers: int, tokens: int, repeats: int,
                        timeout_s: float) -> float:
    """CPU seconds per block forward + backward on `tokens` tokens while `procs` processes run it at
    once (one thread each; the slowest rank's median); `procs` = 1 is the reference, measured the same
    way in a fresh process."""
    if procs < 1:
        raise ValueError(f"procs={procs}: need at least 1 process")
    return _spawn(_concurrency_worker, procs, spec.model_dump_json(), layers, tokens, repeats,
                  timeout_s=timeout_s)["block_cpu_s"]


def measure_fsdp(spec: ModelSpec, *, procs: int, layers: int, tokens: int, repeats: int,
                 timeout_s: float) -> dict[str, float]:
    """{'ddp': s, 'zero2': s, 'zero3': s}: extra CPU seconds per block and step (forward + backward
    with the data-parallel collectives) over `procs` ranks with DDP around the stack, and with each
    block sharded with FSDP2 without / with resharding after forward, over the same blocks alone; plus
    'opt_sharded' (+ '_tensors', '_params'): an AdamW step over the FSDP2-sharded parameters."""
    if procs < 2:
        raise ValueError(f"procs={procs}: sharded data parallelism needs at least 2 processes")
    return _spawn(_fsdp_worker, procs, spec.model_dump_json(), layers, tokens, repeats, timeout_s=timeout_s)
