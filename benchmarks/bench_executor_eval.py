"""Validation curves of `paraplan run` (executor.evaluate): tiny-llama for 50 steps on 1 process and
pipelined over 2 (the same validation losses, and perplexity that falls), and tiny-t5 pipelined over 2
and sharded over 2 (FSDP2 ZeRO-3), with BLEU/ROUGE of its greedy outputs at the end.

    .venv/bin/python -m benchmarks executor_eval       # PARAPLAN_BENCH_EVAL_STEPS=50 by default

Global batch 8 x seq 64, the default lr schedule (3e-4, 10% warm-up, cosine), evaluation every 10 steps
on 2 held-out batches (the last 5% of the built-in corpus), one thread per process."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from costmodel import ParallelPlan, save_plan

__all__ = ["main", "validation_curve"]

GLOBAL_BATCH = 8
SEQ_LEN = 64


def validation_curve(model: str, plan: ParallelPlan, *, steps: int, workdir: Path) -> list[dict]:
    """The run's `summary.json` validation results (one per evaluation)."""
    from executor.launch import run_plan

    out = workdir / f"{model}-{plan.short()}"
    result = run_plan(save_plan(plan, workdir / f"{model}-{plan.short()}.json"), model=model, steps=steps, out=out,
                      global_batch=GLOBAL_BATCH, seq_len=SEQ_LEN, log_every=0, eval_every=10, eval_batches=2,
                      stream=None)
    assert result.summary is not None
    return [v.model_dump() for v in result.summary.validation]


def main() -> None:
    steps = int(os.environ.get("PARAPLAN_BENCH_EVAL_STEPS", "50"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runs = [("tiny-llama", ParallelPlan()), ("tiny-llama", ParallelPlan(pp=2, micro_batch_size=2)),
            ("tiny-t5", ParallelPlan(pp=2, micro_batch_size=2)), ("tiny-t5", ParallelPlan(dp=2, zero_stage=3))]
    with tempfile.TemporaryDirectory(prefix="paraplan-bench-eval-") as tmp:
        print("| model | plan | step | val loss | val perplexity | BLEU | ROUGE-1 / 2 / L |")
        print("|---|---|---|---|---|---|---|")
        for model, plan in runs:
            for v in validation_curve(model, plan, steps=steps, workdir=Path(tmp)):
                text = ("-", "-") if v["bleu"] is None else (
                    f"{v['bleu']:.1f}", f"{v['rouge1']:.1f} / {v['rouge2']:.1f} / {v['rouge_l']:.1f}")
                print(f"| {model} | {plan.short()} | {v['step']} | {v['loss']:.4f} | {v['perplexity']:.2f} | "
                      f"{text[0]} | {text[1]} |", flush=True)


if __name__ == "__main__":
    main()
