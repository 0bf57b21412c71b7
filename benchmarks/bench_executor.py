"""Executor overhead: tokens/s of `paraplan run` on 1 process (torchrun + the engine + metrics) against a
plain single-process torch training loop of the same model and batch, and of dp2 on 2 processes.

    .venv/bin/python -m benchmarks executor          # PARAPLAN_BENCH_STEPS=30 by default

Both sides use one intra-op thread per process (OMP_NUM_THREADS=1), the same micro-batching (global batch
8 = 8 micro-batches of 1 sequence), AdamW, grad clipping and the same data; the figure is the median step
time after the first step. The overhead goal is <= 5%."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from costmodel import ParallelPlan, load_model, save_plan

__all__ = ["main", "plain_loop_tokens_per_s"]

MODEL = "small-llama"
GLOBAL_BATCH = 8
SEQ_LEN = 128


def plain_loop_tokens_per_s(model_name: str, *, steps: int, global_batch: int, seq_len: int) -> float:
    """A textbook training loop: the reference model, AdamW, accumulation over micro-batches of 1, clipping."""
    import torch.nn.functional as F

    from executor.data import BatchSource, load_corpus
    from executor.init import init_weights
    from executor.model import build_model

    spec = load_model(model_name)
    model = build_model(spec, device="cpu")
    init_weights(model, spec, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
    source = BatchSource(load_corpus(), seed=0, global_batch_size=global_batch, seq_len=seq_len)
    times = []
    for step in range(1, steps + 1):
        tokens, targets = source.batch(step)
        t0 = time.perf_counter()
        n = (targets != -100).sum()
        for x, y in zip(tokens.split(1), targets.split(1), strict=True):
            logits = model(x)
            (F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return global_batch * seq_len / statistics.median(times[1:])


def _run_tokens_per_s(plan: ParallelPlan, *, steps: int, workdir: Path) -> float:
    from executor.launch import run_plan

    out = workdir / plan.short()
    result = run_plan(save_plan(plan, workdir / f"{plan.short()}.json"), model=MODEL, steps=steps, out=out,
                      global_batch=GLOBAL_BATCH, seq_len=SEQ_LEN, log_every=0, stream=None)
    assert result.summary is not None
    return result.summary.tokens_per_s


def main() -> None:
    steps = int(os.environ.get("PARAPLAN_BENCH_STEPS", "30"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    try:
        with tempfile.TemporaryDirectory(prefix="paraplan-bench-") as tmp:
            workdir = Path(tmp)
            plain = plain_loop_tokens_per_s(MODEL, steps=steps, global_batch=GLOBAL_BATCH, seq_len=SEQ_LEN)
            one = _run_tokens_per_s(ParallelPlan(), steps=steps, workdir=workdir)
            plain2 = plain_loop_tokens_per_s(MODEL, steps=steps, global_batch=GLOBAL_BATCH, seq_len=SEQ_LEN)
            dp2 = _run_tokens_per_s(ParallelPlan(dp=2), steps=steps, workdir=workdir)
    finally:
        torch.set_num_threads(threads)
    plain_best = max(plain, plain2)
    print(f"   model {MODEL}, global batch {GLOBAL_BATCH} x seq {SEQ_LEN}, {steps} steps, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {os.cpu_count()} cores")
    print(f"   plain torch loop (1 process)   {plain:9.0f} / {plain2:9.0f} tokens/s (before / after)")
    print(f"   paraplan run, 1 process        {one:9.0f} tokens/s   overhead {1 - one / plain_best:+.1%} "
          "(goal <= 5%)")
    print(f"   paraplan run, dp2 (2 processes) {dp2:8.0f} tokens/s   speed-up {dp2 / one:.2f}x over 1 process")
