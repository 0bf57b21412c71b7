"""Executor engine overhead: `Engine.train_step` (1 process, plan dp1-tp1-pp1) against a plain torch
training loop of the same model, weights, data and optimizer (goal: <= 5% slower); then
tokens/s of dp2 on 2 processes (torchrun, Gloo) for the same global batch.

    .venv/bin/python -m benchmarks executor_engine

Both 1-process loops alternate step by step in one process (one thread) so machine load hits them
alike; figures are median step times over the measured steps."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from costmodel import load_model
from costmodel.specs import ParallelPlan, TrainingSpec
from executor.engine import ADAM_BETAS, ADAM_EPS, build_engine
from executor.init import init_weights
from executor.model import IGNORE_INDEX, build_model
from executor.parity import synthetic_batch

__all__ = ["main", "measure", "measure_dp"]

MODEL = "small-llama"
TRAINING = TrainingSpec(global_batch_size=8, seq_len=128, dtype="fp32")
PLAN = ParallelPlan(micro_batch_size=4)
WARMUP, STEPS, LR = 2, 10, 1e-3


def _plain_step(model: torch.nn.Module, opt: torch.optim.Optimizer, tokens: torch.Tensor, targets: torch.Tensor,
                micro_batch_size: int) -> float:
    """What a user writes by hand: accumulate mean-loss gradients, clip, AdamW."""
    n = tokens.shape[0] // micro_batch_size
    total = 0.0
    for x, y in zip(tokens.split(micro_batch_size), targets.split(micro_batch_size), strict=True):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX) / n
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total


def measure(model_name: str = MODEL, *, steps: int = STEPS) -> dict[str, float]:
    """Median step times (s) of the engine and the plain loop, and the engine's overhead."""
    spec = load_model(model_name)
    device = torch.device("cpu")
    engine = build_engine(spec, PLAN, TRAINING, device=device, lr=LR)
    plain = build_model(spec, device="meta")
    plain.to_empty(device=device)
    init_weights(plain, spec, seed=0)
    decay = [p for p in plain.parameters() if p.ndim >= 2]
    rest = [p for p in plain.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=ADAM_BETAS, eps=ADAM_EPS)
    engine_s, plain_s = [], []
    for step in range(WARMUP + steps):
        tokens, targets = synthetic_batch(spec, TRAINING, step=step)
        t0 = time.perf_counter()
        engine.train_step(tokens, targets, lr=LR)
        t1 = time.perf_counter()
        _plain_step(plain, opt, tokens, targets, PLAN.micro_batch_size)
        t2 = time.perf_counter()
        if step >= WARMUP:
            engine_s.append(t1 - t0)
            plain_s.append(t2 - t1)
    e, p = statistics.median(engine_s), statistics.median(plain_s)
    return {"engine_step_s": e, "plain_step_s": p, "overhead": e / p - 1.0,
            "engine_tokens_per_s": TRAINING.tokens_per_step / e, "plain_tokens_per_s": TRAINING.tokens_per_step / p}


def _dp_worker(out: str) -> None:
    """torchrun worker: median step time of the engine with plan dp=world on its DP slice."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    spec = load_model(MODEL)
    plan = PLAN.model_copy(update={"dp": dist.get_world_size()})
    engine = build_engine(spec, plan, TRAINING, device=torch.device("cpu"), lr=LR)
    rows = engine.local_batch_size
    times = []
    for step in range(WARMUP + STEPS):
        tokens, targets = synthetic_batch(spec, TRAINING, step=step)
        sl = slice(engine.dp_rank * rows, (engine.dp_rank + 1) * rows)
        dist.barrier()
        t0 = time.perf_counter()
        engine.train_step(tokens[sl], targets[sl], lr=LR)
        if step >= WARMUP:
            times.append(time.perf_counter() - t0)
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"step_s": statistics.median(times)}))
    dist.destroy_process_group()


def measure_dp(nproc: int = 2) -> dict[str, float]:
    """Median step time and tokens/s of plan dp=`nproc` on `nproc` local processes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dp.json"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "benchmarks.bench_executor_engine", "--worker", "--out", str(out)]
        subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=900)
        step_s = json.loads(out.read_text())["step_s"]
    return {"step_s": step_s, "tokens_per_s": TRAINING.tokens_per_step / step_s}


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = measure()
    finally:
        torch.set_num_threads(threads)
    print(f"   {MODEL}, global batch {TRAINING.global_batch_size} x seq {TRAINING.seq_len}, mb {PLAN.micro_batch_size}, "
          f"1 CPU thread, median of {STEPS} steps")
    print(f"   engine: {r['engine_step_s'] * 1e3:.1f} ms/step, {r['engine_tokens_per_s']:.0f} tokens/s")
    print(f"   plain : {r['plain_step_s'] * 1e3:.1f} ms/step, {r['plain_tokens_per_s']:.0f} tokens/s")
    print(f"   engine overhead: {r['overhead'] * 100:+.1f}% (goal <= 5%)")
    d = measure_dp(2)
    print(f"   dp2 (2 processes, Gloo, 1 thread each): {d['step_s'] * 1e3:.1f} ms/step, "
          f"{d['tokens_per_s']:.0f} tokens/s ({d['tokens_per_s'] / r['engine_tokens_per_s']:.2f}x 1 process)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        _dp_worker(args.out)
    else:
        main()
