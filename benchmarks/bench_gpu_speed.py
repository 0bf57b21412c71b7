"""Executor speed on one GPU: tokens/s and MFU of the executor against a plain torch loop with each
block compiled and a plain eager loop (executor.baseline), and its peak memory against both.

    python -m benchmarks gpu-speed                                   # the cases below, ~6-8 min on one H200
    python -m benchmarks.bench_gpu_speed --out runs/gpu_speed.json   # also writes the rows as JSON
    python -m benchmarks.bench_gpu_speed --cases gpt3-1.3b --steps 5

Cases are those of `../shared/data/gpu/h200_single_gpu_2026-12.csv` (plan dp1-tp1-pp1, bf16 autocast,
fp32 master weights, AdamW fused) plus the 7B case in fp8 (torchao float8 linears, compiled). Each
loop trains `warmup` steps (compilation happens there), then `steps` timed steps; the figure is the
median step. MFU is model FLOPs (executor.metrics.model_flops_per_step) over the GPU's dense bf16 peak,
for fp8 too, so fp8's column reads as its speed-up in bf16 terms. Peak memory is
`torch.cuda.max_memory_allocated()` of each loop alone on the GPU. Goals (the speed issue): executor
>= 1.0x the compiled loop, fp8 >= 1.3x bf16 eager on the 7B case, peak within 2% of the plain loop.

Without a CUDA device it says so and returns: the CPU path (`measure_case(..., device=cpu)`) exists for
the tests, on tiny shapes."""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from costmodel import ParallelPlan, TrainingSpec, load_model
from costmodel.atomic import write_text_atomic
from costmodel.catalog import model_from_hf_config
from costmodel.specs import ModelSpec

__all__ = ["Case", "CASES", "measure_case", "run", "format_table", "main"]

GIB = 2**30
LLAMA_32_1B = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
               "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256, "hidden_act": "silu",
               "max_position_embeddings": 131072, "tie_word_embeddings": True}
"""Public config.json fields of Llama 3.2 1B (as in the H200 data set's row)."""


@dataclass(frozen=True)
class Case:
    """One benchmark shape. `loops`: which of 'eager', 'compiled' (plain loops) and 'executor' to run."""

    name: str
    model: str | dict[str, Any]
    seq_len: int
    global_batch: int
    micro_batch: int
    recompute: str = "none"
    dtype: str = "bf16"
    loops: tuple[str, ...] = ("eager", "compiled", "executor")
    compare_to: str | None = None
    """for fp8: the bf16 case whose loops are the base"""

    def spec(self) -> ModelSpec:
        if isinstance(self.model, dict):
            return model_from_hf_config(self.model, name=self.name)
        return load_model(self.model)


CASES = (
    Case("gpt3-1.3b", "gpt3-1.3b", seq_len=2048, global_batch=16, micro_batch=4),
    Case("llama-3.2-1b", LLAMA_32_1B, seq_len=4096, global_batch=16, micro_batch=2),
    Case("llama2-7b-full", "llama2-7b", seq_len=4096, global_batch=8, micro_batch=1, recompute="full"),
    Case("llama2-7b-full-fp8", "llama2-7b", seq_len=4096, global_batch=8, micro_batch=1, recompute="full",
         dtype="fp8", loops=("executor",), compare_to="llama2-7b-full"),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _build(loop: str, case: Case, spec: ModelSpec, training: TrainingSpec, device: torch.device
           ) -> Callable[[torch.Tensor, torch.Tensor, float], float]:
    """A step function (tokens, targets, lr) -> loss for one loop of `case`."""
    from executor.baseline import build_plain_loop
    from executor.engine import build_engine, compute_dtype

    if loop == "executor":
        plan = ParallelPlan(micro_batch_size=case.micro_batch, recompute=case.recompute)
        engine = build_engine(spec, plan, training, device=device)  # compiled on CUDA by default
        return lambda x, y, lr: engine.train_step(x, y, lr=lr)
    plain = build_plain_loop(spec, device=device, micro_batch_size=case.micro_batch, recompute=case.recompute,
                             compile=loop == "compiled", dtype=compute_dtype(training, device))
    return lambda x, y, lr: plain.step(x, y, lr=lr)


def _time_loop(loop: str, case: Case, spec: ModelSpec, training: TrainingSpec, device: torch.device,
               batches: list[tuple[torch.Tensor, torch.Tensor]], warmup: int) -> tuple[list[float], float]:
    """Build one loop, train on `batches`; (timed step seconds after `warmup`, last loss)."""
    step = _build(loop, case, spec, training, device)
    times, loss = [], float("nan")
    for i, (x, y) in enumerate(batches):
        _sync(device)
        t0 = time.perf_counter()
        loss = step(x, y, 1e-4)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, loss


def measure_case(case: Case, *, device: torch.device, steps: int = 3, warmup: int = 2,
                 deadline_s: float = float("inf")) -> list[dict[str, Any]]:
    """One row per loop: median step time, tokens/s, MFU, peak GiB (CUDA), last loss, or the reason it
    did not run (out of memory, time budget)."""
    from executor.metrics import device_gpu_spec, model_flops_per_step
    from executor.parity import synthetic_batch

    spec = case.spec()
    training = TrainingSpec(global_batch_size=case.global_batch, seq_len=case.seq_len, dtype=case.dtype)
    flops = model_flops_per_step(spec, training)
    gpu = device_gpu_spec(device) if device.type == "cuda" else None
    peak_flops = gpu.peak_flops("bf16") if gpu is not None else None
    batches = [tuple(t.to(device) for t in synthetic_batch(spec, training, step=s)) for s in range(warmup + steps)]
    torch._dynamo.reset()  # a new shape: compile it statically, not as a dynamic-shape graph
    rows = []
    for loop in case.loops:
        row: dict[str, Any] = {"case": case.name, "loop": loop, "dtype": case.dtype}
        rows.append(row)
        if time.monotonic() > deadline_s:
            row["skipped"] = "time budget spent"
            continue
        _free(device)
        try:
            times, loss = _time_loop(loop, case, spec, training, device, batches, warmup)
        except torch.cuda.OutOfMemoryError:
            row["skipped"] = "out of memory"
            continue
        except Exception as exc:  # one failing loop (e.g. fp8 refused here) must not cost the other cases
            traceback.print_exc()
            row["skipped"] = f"failed: {type(exc).__name__}: {exc}".splitlines()[0][:200]
            continue
        finally:
            peak_gib = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
        step_s = statistics.median(times)
        row.update(step_s=step_s, tokens_per_s=training.tokens_per_step / step_s, loss=loss,
                   mfu=flops / step_s / peak_flops if peak_flops else None, peak_gib=peak_gib)
    _free(device)
    return rows


def _ratios(rows: list[dict[str, Any]], cases: tuple[Case, ...]) -> list[str]:
    """The goals' ratios: executor vs compiled and eager (speed), vs the plain loops (peak), fp8 vs bf16."""
    got = {(r["case"], r["loop"]): r for r in rows if "step_s" in r}
    lines = []
    for case in cases:
        ex = got.get((case.name, "executor"))
        if ex is None:
            continue
        base = case.compare_to or case.name
        for loop in ("compiled", "eager"):
            other = got.get((base, loop))
            if other is None:
                continue
            line = f"{case.name}: executor {other['step_s'] / ex['step_s']:.2f}x the {loop} loop's speed"
            if case.compare_to is None and ex["peak_gib"] and other["peak_gib"]:
                line += f", peak {ex['peak_gib'] / other['peak_gib'] - 1:+.1%} vs it"
            lines.append(line)
    return lines


def format_table(rows: list[dict[str, Any]], cases: tuple[Case, ...] = CASES) -> str:
    """Markdown table of the rows, then the goals' ratios."""
    out = ["| case | loop | dtype | step s | tokens/s | MFU (bf16 peak) | peak GiB | loss |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "step_s" not in r:
            out.append(f"| {r['case']} | {r['loop']} | {r['dtype']} | {r['skipped']} | | | | |")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        out.append(f"| {r['case']} | {r['loop']} | {r['dtype']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | "
                   f"{mfu} | {peak} | {r['loss']:.3f} |")
    return "\n".join(out + [""] + _ratios(rows, cases))


def run(cases: tuple[Case, ...] = CASES, *, device: torch.device, steps: int = 3, warmup: int = 2,
        budget_s: float = 420.0) -> list[dict[str, Any]]:
    """Every case in turn; loops not started within `budget_s` are reported as skipped."""
    deadline = time.monotonic() + budget_s
    rows: list[dict[str, Any]] = []
    for case in cases:
        t0 = time.monotonic()
        rows += measure_case(case, device=device, steps=steps, warmup=warmup, deadline_s=deadline)
        print(f"   {case.name}: {time.monotonic() - t0:.0f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per loop (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no loop after this many seconds")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv if argv is not None else [])
    if not torch.cuda.is_available():
        print("   no CUDA device here: the GPU speed benchmark needs one (nothing measured)")
        return
    cases = CASES
    if args.cases:
        known = {c.name: c for c in CASES}
        bad = [n for n in args.cases.split(",") if n not in known]
        if bad:
            raise SystemExit(f"--cases: unknown {', '.join(bad)}; known: {', '.join(known)}")
        cases = tuple(known[n] for n in args.cases.split(","))
    device = torch.device("cuda", 0)
    print(f"   {torch.cuda.get_device_name(device)}, torch {torch.__version__}, median of {args.steps} steps "
          f"after {args.warmup}", flush=True)
    rows = run(cases, device=device, steps=args.steps, warmup=args.warmup, budget_s=args.budget_s)
    print(format_table(rows, cases))
    if args.out:
        write_text_atomic(args.out, json.dumps({"device": torch.cuda.get_device_name(device),
                                                "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
