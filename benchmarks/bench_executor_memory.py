"""Executor memory against a plain torch loop of the same model (CPU, one process): peak live tensor
bytes of one training step and what stays alive after it (executor.baseline.compare_tensor_bytes,
counted op by op by executor.memtrack). Goal: the executor's peak within 2% of the plain loop's.

    python -m benchmarks executor_memory

The plain loop is what a user writes (torch's AdamW with its CPU default, clip_grad_norm_,
zero_grad(set_to_none=True)); both are measured on their second step, after the optimizer states
exist. On GPUs the same comparison is `python -m benchmarks gpu-speed`'s peak column."""

from __future__ import annotations

import torch

from costmodel import ParallelPlan, TrainingSpec, load_model
from executor.baseline import compare_tensor_bytes

__all__ = ["CASES", "measure", "main"]

CASES = (  # (model, global batch, seq, micro-batch, recompute)
    ("tiny-llama", 4, 16, 4, "none"),
    ("tiny-llama", 4, 64, 2, "full"),
    ("small-llama", 8, 128, 4, "none"),
    ("small-llama", 8, 128, 4, "selective"),
    ("small-llama", 8, 128, 4, "full"),
    ("tiny-gpt", 4, 64, 2, "none"),
    ("tiny-bert", 4, 64, 2, "none"),
)


def measure() -> list[dict[str, object]]:
    rows = []
    for model, gb, seq, mb, recompute in CASES:
        r = compare_tensor_bytes(load_model(model), TrainingSpec(global_batch_size=gb, seq_len=seq, dtype="fp32"),
                                 ParallelPlan(micro_batch_size=mb, recompute=recompute))
        rows.append({"model": model, "shape": f"{gb}x{seq} mb{mb}", "recompute": recompute, **r})
    return rows


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = measure()
    finally:
        torch.set_num_threads(threads)
    print("   | model | batch x seq, micro-batch | recompute | executor peak MB | plain peak MB | ratio | "
          "after-step difference (bytes) |")
    print("   |---|---|---|---|---|---|---|")
    for r in rows:
        print(f"   | {r['model']} | {r['shape']} | {r['recompute']} | {r['executor_peak_bytes'] / 1e6:.3f} | "
              f"{r['plain_peak_bytes'] / 1e6:.3f} | {r['executor_peak_bytes'] / r['plain_peak_bytes']:.4f} | "
              f"{r['executor_after_bytes'] - r['plain_after_bytes']:+d} |")


if __name__ == "__main__":
    main()
