"""Loss-parity harness: run plans on deterministic synthetic data and record per-step losses.

    torchrun --standalone --nproc-per-node 2 -m executor.parity --cases cases.json --out losses.json

`cases.json` is a list of {"name", "model", "plan", "training", "steps", "seed", "lr"} (and optionally
"compile" and "grad_norms": true); every case with plan.world_size equal to the launched world size runs in
turn in the same process group, and rank 0 writes {name: [loss per step]} (or {name: {"losses": [...],
"grad_norms": [...]}}: the global gradient norm before clipping, which AdamW's invariance to a
parameter's gradient scale would otherwise hide). `run_losses` with no process group is the single-process
reference the tests compare against (torchtitan's loss-golden idea)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from costmodel.atomic import write_text_atomic
from costmodel.catalog import load_model
from costmodel.specs import ModelSpec, ParallelPlan, TrainingSpec

from .engine import build_engine
from .model import IGNORE_INDEX

__all__ = ["synthetic_batch", "run_losses", "run_case", "main", "MASK_FRACTION"]

MASK_FRACTION = 0.15
"""Share of positions an encoder predicts (BERT's masked-LM rate, Devlin et al. 2019, sec 3.1)."""


def synthetic_batch(spec: ModelSpec, training: TrainingSpec, *, step: int, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of `step`: tokens and targets [global_batch, seq] (int64). Decoders predict
    the next token; encoders predict masked positions (input = last vocab id, others -100)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    b, s = training.global_batch_size, training.seq_len
    # Sequences with learnable structure: a random start and stride, modulo the vocabulary, plus noise.
    start = torch.randint(0, spec.vocab_size, (b, 1), generator=gen)
    stride = torch.randint(1, 8, (b, 1), generator=gen)
    seq = (start + stride * torch.arange(s + 1)) % spec.vocab_size
    noise = torch.rand(b, s + 1, generator=gen) < 0.1
    seq = torch.where(noise, torch.randint(0, spec.vocab_size, (b, s + 1), generator=gen), seq)
    if spec.arch == "decoder":
        return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    tokens = seq[:, :-1].contiguous()
    masked = torch.rand(b, s, generator=gen) < MASK_FRACTION
    masked[:, 0] = True  # at least one target per row
    targets = torch.where(masked, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return torch.where(masked, torch.full_like(tokens, spec.vocab_size - 1), tokens), targets


def run_losses(spec: ModelSpec, plan: ParallelPlan, training: TrainingSpec, *, steps: int, seed: int = 0,
               lr: float = 1e-3, device: torch.device | None = None, compile: bool | None = None,
               grad_norms: list[float] | None = None) -> list[float]:
    """Per-step global losses of `plan` in the current process group (or a single process), with a
    3-step linear lr warm-up to `lr`; `compile` as `build_engine`'s (None: the device's default); each
    step's gradient norm is appended to `grad_norms` if given."""
    device = device or torch.device("cpu")
    engine = build_engine(spec, plan, training, device=device, seed=seed, lr=lr, compile=compile)
    rows = engine.local_batch_size
    losses = []
    for step in range(steps):
        tokens, targets = synthetic_batch(spec, training, step=step, seed=seed)
        sl = slice(engine.dp_rank * rows, (engine.dp_rank + 1) * rows)
        warmup_lr = lr * min(1.0, (step + 1) / 3)  # a changing lr checks that every optimizer takes it
        losses.append(engine.train_step(tokens[sl], targets[sl], lr=warmup_lr))
        if grad_norms is not None:
            grad_norms.append(engine.grad_norm)
    return losses


def run_case(case: dict[str, Any]) -> list[float] | dict[str, list[float]]:
    spec = load_model(case["model"])
    norms: list[float] | None = [] if case.get("grad_norms") else None
    losses = run_losses(spec, ParallelPlan.model_validate(case["plan"]), TrainingSpec.model_validate(case["training"]),
                        steps=int(case.get("steps", 10)), seed=int(case.get("seed", 0)),
                        lr=float(case.get("lr", 1e-3)), compile=case.get("compile"), grad_norms=norms)
    return losses if norms is None else {"losses": losses, "grad_norms": norms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m executor.parity", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", required=True, help="JSON list of cases")
    parser.add_argument("--out", required=True, help="JSON file for {name: losses} (rank 0)")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="process-group timeout")
    args = parser.parse_args(argv)
    cases = json.loads(Path(args.cases).read_text())
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(seconds=args.timeout_s))
    world = dist.get_world_size() if dist.is_initialized() else 1
    results: dict[str, Any] = {}
    for case in cases:
        if ParallelPlan.model_validate(case["plan"]).world_size != world:
            continue
        try:
            results[case["name"]] = run_case(case)
        except Exception as exc:  # record and go on: one failing plan must not hide the others
            results[case["name"]] = {"error": f"{type(exc).__name__}: {exc}"}
            if dist.is_initialized():
                raise
    if not dist.is_initialized() or dist.get_rank() == 0:
        write_text_atomic(args.out, json.dumps(results, indent=1))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
