"""Loss-parity harness: run plans on deterministic synthetic data and record per-step losses.

    torchrun --standalone --nproc-per-node 2 -m executor.parity --cases cases.json --out losses.json

`cases.json` is a list of {"name", "model", "plan", "training", "steps", "seed", "lr"} (and optionally
"compile", "grad_norms": true, "eval_every": N and "device"); every case with plan.world_size equal to
the launched world size runs in turn in the same process group, and rank 0 writes {name: [loss per step]}
(or {name: {"losses": [...], "grad_norms": [...], "eval_losses": [...]}} with what the case asked for: the
global gradient norm before clipping, which AdamW's invariance to a parameter's gradient scale would
otherwise hide; the loss of a held-out batch every N steps). "device": "cuda" runs a case on this rank's
GPU (NCCL). `run_losses` with no process group is the single-process reference the tests compare against
(torchtitan's loss-golden idea)."""

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
from .span_corruption import raw_length, span_corrupt

__all__ = ["synthetic_batch", "run_losses", "run_with_eval", "run_case", "case_device", "main", "MASK_FRACTION"]

MASK_FRACTION = 0.15
"""Share of positions an encoder predicts (BERT's masked-LM rate, Devlin et al. 2019, sec 3.1)."""


def synthetic_batch(spec: ModelSpec, training: TrainingSpec, *, step: int, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of `step`: tokens and targets [global_batch, seq] (int64). Decoders predict
    the next token; encoders predict masked positions (input = last vocab id, others -100);
    encoder-decoders undo T5's span corruption of byte sequences (tokens [global_batch, 2*seq]).
    Steps < 0 are the held-out batches evaluations use."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    b, s = training.global_batch_size, training.seq_len
    if spec.arch == "encoder-decoder":
        width = raw_length(s)
        start, stride = torch.randint(0, 256, (b, 1), generator=gen), torch.randint(1, 8, (b, 1), generator=gen)
        windows = (start + stride * torch.arange(width)) % 256
        return span_corrupt(windows, seq_len=s, vocab_size=spec.vocab_size, gen=gen)
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
    return run_with_eval(spec, plan, training, steps=steps, seed=seed, lr=lr, device=device,
                         compile=compile, grad_norms=grad_norms)["losses"]


def run_with_eval(spec: ModelSpec, plan: ParallelPlan, training: TrainingSpec, *, steps: int, seed: int = 0,
                  lr: float = 1e-3, device: torch.device | None = None, compile: bool | None = None,
                  grad_norms: list[float] | None = None, eval_every: int = 0) -> dict[str, list]:
    """{"losses": per-step global losses, "eval_losses": mean token loss of the held-out batch (step
    -1) after every `eval_every` steps (0: never)}: evaluation runs between training steps, so the
    losses after it also check that it leaves training untouched."""
    device = device or torch.device("cpu")
    engine = build_engine(spec, plan, training, device=device, seed=seed, lr=lr, compile=compile)
    rows = slice(engine.dp_rank * engine.local_batch_size, (engine.dp_rank + 1) * engine.local_batch_size)
    losses, eval_losses = [], []
    for step in range(steps):
        tokens, targets = synthetic_batch(spec, training, step=step, seed=seed)
        warmup_lr = lr * min(1.0, (step + 1) / 3)  # a changing lr checks that every optimizer takes it
        losses.append(engine.train_step(tokens[rows], targets[rows], lr=warmup_lr))
        if grad_norms is not None:
            grad_norms.append(engine.grad_norm)
        if eval_every and (step + 1) % eval_every == 0:
            tokens, targets = synthetic_batch(spec, training, step=-1, seed=seed)
            loss_sum, count = engine.eval_loss(tokens[rows], targets[rows])
            eval_losses.append(loss_sum / count)
    return {"losses": losses, "eval_losses": eval_losses}


def case_device(case: dict[str, Any]) -> torch.device:
    """The case's device: the CPU, or this rank's GPU for "device": "cuda"."""
    if case.get("device", "cpu") == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def run_case(case: dict[str, Any]) -> list[float] | dict[str, list[float]]:
    spec = load_model(case["model"])
    device = case_device(case)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    norms: list[float] | None = [] if case.get("grad_norms") else None
    eval_every = int(case.get("eval_every", 0))
    out = run_with_eval(spec, ParallelPlan.model_validate(case["plan"]), TrainingSpec.model_validate(case["training"]),
                        steps=int(case.get("steps", 10)), seed=int(case.get("seed", 0)),
                        lr=float(case.get("lr", 1e-3)), device=device, compile=case.get("compile"),
                        grad_norms=norms, eval_every=eval_every)
    if norms is None and not eval_every:
        return out["losses"]
    return {"losses": out["losses"], **({"grad_norms": norms} if norms is not None else {}),
            **({"eval_losses": out["eval_losses"]} if eval_every else {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m executor.parity", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", required=True, help="JSON list of cases")
    parser.add_argument("--out", required=True, help="JSON file for {name: losses} (rank 0)")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="process-group timeout")
    args = parser.parse_args(argv)
    cases = json.loads(Path(args.cases).read_text())
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        cuda = any(c.get("device") == "cuda" for c in cases)
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timedelta(seconds=args.timeout_s))
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
