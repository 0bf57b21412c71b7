"""A plain torch training loop of the same model: the yardstick for the executor's speed and memory.

What a user writes by hand for one process (the loop of `../shared/data/gpu/`'s H200 runs): the
executor's reference model with the same weights, optionally each block recomputed
(`checkpoint_wrapper`) and compiled, bf16 autocast on CUDA, mean-loss gradient accumulation over
micro-batches, `torch.nn.utils.clip_grad_norm_`, torch's AdamW with its device default (fused on
CUDA, as the H200 loop ran; torch's per-tensor loop on CPU), `zero_grad(set_to_none=True)`.

`peak_tensor_bytes` runs one step of either loop under `executor.memtrack.TensorBytesTracker` (CPU:
live tensor bytes) and returns its peak and what stays alive after it, so the executor's allocations
can be compared with the plain loop's byte for byte."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.specs import ModelSpec, ParallelPlan, TrainingSpec
from costmodel.specs.optimizer import ADAMW_WEIGHT_DECAY, adamw_param_groups

from .compile import apply_compile
from .init import init_weights
from .memtrack import TensorBytesTracker
from .model import IGNORE_INDEX, build_model
from .optim import ADAM_BETAS, ADAM_EPS
from .parallelize import apply_recompute

__all__ = ["PlainLoop", "build_plain_loop", "peak_tensor_bytes", "resident_tensors", "compare_tensor_bytes"]


@dataclass
class PlainLoop:
    """One process, no wrapper: `step(tokens, targets, lr=...)` returns the mean loss."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    micro_batch_size: int
    dtype: torch.dtype
    device: torch.device

    def step(self, tokens: torch.Tensor, targets: torch.Tensor, *, lr: float, max_grad_norm: float = 1.0) -> float:
        tokens, targets = tokens.to(self.device), targets.to(self.device)
        n = tokens.shape[0] // self.micro_batch_size
        total = torch.zeros((), device=self.device)
        for x, y in zip(tokens.split(self.micro_batch_size), targets.split(self.micro_batch_size), strict=True):
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                logits = self.model(x)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX) / n
            del logits
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(total)


def build_plain_loop(spec: ModelSpec, *, device: torch.device, micro_batch_size: int, recompute: str = "none",
                     compile: bool = False, dtype: torch.dtype = torch.float32, seed: int = 0, lr: float = 3e-4,
                     weight_decay: float = ADAMW_WEIGHT_DECAY) -> PlainLoop:
    """The plain loop of `spec` with the executor's initial weights for `seed`."""
    device = torch.device(device)
    model = build_model(spec, device="meta")
    apply_recompute(model, recompute)
    if compile:
        apply_compile(model)
    model.to_empty(device=device)
    init_weights(model, spec, seed=seed)
    groups = adamw_param_groups(list(model.parameters()), weight_decay=weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                                  fused=True if device.type == "cuda" else None)
    return PlainLoop(model=model, optimizer=optimizer, micro_batch_size=micro_batch_size, dtype=dtype, device=device)


def peak_tensor_bytes(step: Callable[[], object], *, resident: Iterable[torch.Tensor]) -> tuple[int, int]:
    """(peak, after) live tensor bytes of one call of `step`, counting `resident` tensors (parameters,
    buffers, optimizer states) from the start; run a warm-up step first so the states exist."""
    with TensorBytesTracker(seed=resident) as tracker:
        step()
    return tracker.peak_bytes, tracker.current_bytes


def resident_tensors(modules: Iterable[nn.Module], optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Parameters, buffers and optimizer states: what lives between steps by design."""
    out = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    states = getattr(optimizer, "optim", optimizer).state  # ZeroRedundancyOptimizer keeps a local one
    out += [v for state in states.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return out


def compare_tensor_bytes(spec: ModelSpec, training: TrainingSpec, plan: ParallelPlan, *, seed: int = 0
                         ) -> dict[str, int]:
    """One process on the CPU: peak and after-step live tensor bytes of the executor (`plan`, dp=tp=pp=1)
    and of the plain loop with the same micro-batch size and recompute, each measured on its second
    step (the first allocates the optimizer states)."""
    from .engine import build_engine
    from .parity import synthetic_batch

    if plan.world_size != 1:
        raise ValueError(f"plan: the plain loop runs one process; got world size {plan.world_size}")
    batches = [synthetic_batch(spec, training, step=s, seed=seed) for s in range(2)]
    engine = build_engine(spec, plan, training, device=torch.device("cpu"), seed=seed, compile=False)
    engine.train_step(*batches[0], lr=1e-3)
    e_peak, e_after = peak_tensor_bytes(lambda: engine.train_step(*batches[1], lr=1e-3),
                                        resident=resident_tensors(engine.model_parts, engine.optimizer))
    plain = build_plain_loop(spec, device=torch.device("cpu"), micro_batch_size=plan.micro_batch_size,
                             recompute=plan.recompute, seed=seed)
    plain.step(*batches[0], lr=1e-3)
    p_peak, p_after = peak_tensor_bytes(lambda: plain.step(*batches[1], lr=1e-3),
                                        resident=resident_tensors([plain.model], plain.optimizer))
    return {"executor_peak_bytes": e_peak, "plain_peak_bytes": p_peak, "executor_after_bytes": e_after,
            "plain_after_bytes": p_after}
