"""Training settings every launch shares (here or on a cluster): the checks of the numbers a user gives,
the default batch, and the learning-rate schedule a resumed run follows.

Numbers are checked before any process starts: a NaN, an infinity or a negative count would otherwise
pass argparse and fail on every rank with a traceback (or train on garbage)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from costmodel import ParallelPlan

__all__ = ["check_numbers", "default_global_batch", "schedule_note", "MAX_SEED", "PACKAGE_ROOT"]

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding costmodel/ and executor/: on the workers' PYTHONPATH, so a source checkout runs."""

MAX_SEED = 2**32 - 1
"""Seeds are drawn into 64-bit generator seeds (`seed * 1_000_003 + step`); 32 bits keep that in range."""


def _finite(name: str, value: float, *, minimum: float, strict: bool) -> None:
    bad = not math.isfinite(value) or (value <= minimum if strict else value < minimum)
    if bad:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        kind = "an integer" if isinstance(value, int) else "a finite number"
        raise ValueError(f"{name}={value}: must be {kind} {bound}")


def check_numbers(*, steps: int | None = None, global_batch: int | None = None, seq_len: int | None = None,
                  seed: int | None = None, lr: float | None = None, warmup_steps: int | None = None,
                  lr_decay_steps: int | None = None, ckpt_every: int | None = None,
                  max_restarts: int | None = None, timeout_s: float | None = None,
                  log_every: int | None = None, nnodes: int | None = None) -> None:
    """ValueError naming the first number that is not finite or out of range (None: not given)."""
    strictly_positive = {"steps": steps, "global_batch": global_batch, "seq_len": seq_len, "lr": lr,
                         "lr_decay_steps": lr_decay_steps, "timeout": timeout_s, "nnodes": nnodes}
    non_negative = {"warmup_steps": warmup_steps, "ckpt_every": ckpt_every, "max_restarts": max_restarts,
                    "log_every": log_every, "seed": seed}
    for name, value in strictly_positive.items():
        if value is not None:
            _finite(name, value, minimum=0, strict=True)
    for name, value in non_negative.items():
        if value is not None:
            _finite(name, value, minimum=0, strict=False)
    if seed is not None and seed > MAX_SEED:
        raise ValueError(f"seed={seed}: must be at most {MAX_SEED}")
    if warmup_steps is not None and lr_decay_steps is not None and warmup_steps > lr_decay_steps:
        raise ValueError(f"warmup_steps={warmup_steps}: must not exceed lr_decay_steps={lr_decay_steps}")


def default_global_batch(plan: ParallelPlan, *, sequences: int = 8) -> int:
    """`sequences` (8: a run on this machine), rounded up to whole micro-batches per DP rank (and to a
    multiple of pp micro-batches for interleaved 1F1B)."""
    unit = plan.dp * plan.micro_batch_size
    micro_batches = math.ceil(sequences / unit)
    if plan.schedule == "interleaved-1f1b":
        micro_batches = math.ceil(micro_batches / plan.pp) * plan.pp
    return unit * micro_batches


def schedule_note(saved: dict[str, Any], *, steps: int, lr_decay_steps: int | None) -> str | None:
    """What a resumed run's learning rate does past the checkpoint's cosine, when the user asks for more
    steps than it spans without giving --lr-decay-steps (the run keeps the checkpoint's schedule, so it
    continues the same run; the note says how to stretch it)."""
    decay = saved.get("lr_decay_steps")
    if lr_decay_steps is not None or decay is None or steps <= int(decay):
        return None
    return (f"resuming keeps the checkpoint's cosine schedule: it decays over {decay} steps, so steps "
            f"{int(decay) + 1}-{steps} train at the final lr; pass --lr-decay-steps {steps} to stretch it "
            "over the whole run")
