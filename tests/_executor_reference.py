"""Helper for executor tests: the single-process reference run (no torchrun), the loss golden every plan
must reproduce."""

from __future__ import annotations

import torch

from costmodel import ParallelPlan, TrainingSpec, load_model
from executor.data import BatchSource, load_corpus
from executor.engine import build_engine
from executor.train import DEFAULT_LR, lr_at


def reference_losses(model: str, *, steps: int, global_batch: int, seq_len: int, seed: int = 0) -> list[float]:
    """Losses of steps 1..steps of one process with the training loop's defaults (lr, warm-up, cosine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = load_model(model)
        engine = build_engine(spec, ParallelPlan(), TrainingSpec(global_batch_size=global_batch, seq_len=seq_len,
                                                                 dtype="fp32"),
                              device=torch.device("cpu"), seed=seed, lr=DEFAULT_LR)
        source = BatchSource(load_corpus(), seed=seed, global_batch_size=global_batch, seq_len=seq_len,
                             arch=spec.arch)
        return [engine.train_step(*source.batch(s), lr=lr_at(s, lr=DEFAULT_LR, warmup_steps=steps // 10,
                                                               decay_steps=steps))
                for s in range(1, steps + 1)]
    finally:
        torch.set_num_threads(threads)
