"""Collective micro-benchmarks across N local processes with torch.distributed (Gloo on CPU, NCCL on
GPU), all bound to 127.0.0.1, with a process-group timeout and a wall-clock deadline.

Each (op, size) is timed `repeats` times after `warmup` runs: every rank waits at a barrier, times
the op, and the slowest rank's time counts (a collective ends when its last rank does); the CPU
seconds the busiest rank spent in it (`time.process_time`, all its threads) are kept too. send_recv is
half a ping-pong round trip between ranks 0 and 1. Sizes are full buffer bytes (fp32), as
`CommModel.time_s` takes them; reduce-scatter's input and all-gather's output have that size."""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..profile_spec import CollectivePoint

__all__ = ["OPS", "free_port", "run_collectives", "stop_processes"]

OPS = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "send_recv")


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _op_fn(op: str, numel: int, world: int, rank: int, device: torch.device) -> Callable[[], object]:
    x = torch.ones(numel, device=device)
    if op == "all_reduce":
        return lambda: dist.all_reduce(x)
    if op == "reduce_scatter":
        out = torch.empty(numel // world, device=device)
        rs = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        return lambda: rs(out, x)
    if op == "all_gather":
        shard, out = torch.ones(numel // world, device=device), torch.empty(numel, device=device)
        ag = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return lambda: ag(out, shard)
    if op == "all_to_all":
        out = torch.empty(numel, device=device)
        return lambda: dist.all_to_all_single(out, x)
    if op == "send_recv":
        def pingpong() -> None:
            if rank == 0:
                dist.send(x, 1)
                dist.recv(x, 1)
            elif rank == 1:
                dist.recv(x, 0)
                dist.send(x, 0)
        return pingpong
    raise ValueError(f"op {op!r} is not one of {OPS}")


def _worker(rank: int, world: int, port: int, backend: str, ops: list[str], sizes: list[int],
            warmup: int, repeats: int, seed: int, out_path: str, timeout_s: float, threads: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        for op in ops:
            for nbytes in sizes:
                numel = max(world, nbytes // 4 // world * world)
                fn = _op_fn(op, numel, world, rank, device)
                for _ in range(warmup):
                    fn()
                times, cpus = [], []
                for _ in range(repeats):
                    dist.barrier()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    dt = torch.tensor([time.perf_counter() - t0, time.process_time() - c0], dtype=torch.float64,
                                      device=device)
                    dist.all_reduce(dt, op=dist.ReduceOp.MAX)
                    times.append(float(dt[0]) / (2 if op == "send_recv" else 1))
                    cpus.append(float(dt[1]) / (2 if op == "send_recv" else 1))
                if rank == 0:
                    rec = {"op": op, "group_size": world if op != "send_recv" else 2, "nbytes": numel * 4,
                           "time_s": statistics.median(times),
                           "time_std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
                           "samples_s": times, "cpu_s": statistics.median(cpus)}
                    with open(out_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                        f.flush()
    finally:
        dist.destroy_process_group()


def run_collectives(*, nprocs: int, ops: list[str], sizes: list[int], backend: str = "gloo",
                    warmup: int = 1, repeats: int = 5, seed: int = 0, timeout_s: float = 120.0,
                    on_point: Callable[[CollectivePoint], None] | None = None) -> list[CollectivePoint]:
    """Spawn `nprocs` local ranks and time each op over each size; returns the measured points.
    Raises RuntimeError if a rank fails and TimeoutError past `timeout_s` (the ranks are ended)."""
    if nprocs < 2:
        raise ValueError(f"nprocs={nprocs}: collectives need at least 2 processes")
    if backend == "nccl" and nprocs > torch.cuda.device_count():
        raise ValueError(f"nprocs={nprocs} exceeds the {torch.cuda.device_count()} visible GPUs; "
                         "NCCL runs one process per GPU (lower --nprocs)")
    bad = [op for op in ops if op not in OPS]
    if bad:
        raise ValueError(f"ops: unknown {bad}; choose from {OPS}")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", _loopback_name())
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    threads = max(1, (os.cpu_count() or 1) // nprocs)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"paraplan-coll-{os.getpid()}-{free_port()}.jsonl"
    out.unlink(missing_ok=True)
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, nprocs, port, backend, ops, sizes, warmup, repeats, seed,
                                                str(out), timeout_s, threads), daemon=True)
             for r in range(nprocs)]
    for p in procs:
        p.start()
    points: list[CollectivePoint] = []
    expected = len(ops) * len(sizes)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            points = _read_points(out, points, on_point)
            codes = [p.exitcode for p in procs]
            if any(c not in (None, 0) for c in codes):
                raise RuntimeError(f"collective benchmark: a rank exited with code {codes}")
            if all(c == 0 for c in codes) or len(points) >= expected:
                for p in procs:  # all points are in: give the ranks a moment to tear down
                    p.join(timeout=10)
                return _read_points(out, points, on_point)
            if time.monotonic() > deadline:
                raise TimeoutError(f"collective benchmark did not finish in {timeout_s:.0f} s "
                                   f"({len(points)} points measured); lower the sizes or raise the timeout")
            time.sleep(0.1)
    finally:
        stop_processes(procs)
        out.unlink(missing_ok=True)


def stop_processes(procs: list) -> None:
    """Terminate benchmark worker processes still alive and reap them all (a hung rank never outlives
    its benchmark)."""
    for p in procs:
        if p.is_alive():
            p.terminate()
        p.join(timeout=5)


def _read_points(path: Path, have: list[CollectivePoint],
                 on_point: Callable[[CollectivePoint], None] | None) -> list[CollectivePoint]:
    if not path.exists():
        return have
    lines = [ln for ln in path.read_text().splitlines() if ln.endswith("}")]
    new = [CollectivePoint(**json.loads(ln)) for ln in lines[len(have):]]
    for pt in new:
        if on_point:
            on_point(pt)
    return have + new


def _loopback_name() -> str:
    for _, name in socket.if_nameindex():
        if name.startswith("lo"):
            return name
    return "lo"
