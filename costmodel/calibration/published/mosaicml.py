"""MosaicML's llm-foundry MPT training benchmarks (PyTorch FSDP on A100 and H100; mosaicml/README.md):
measured step time = tokens per step / measured tokens per second, priced with stack `fsdp`."""

from __future__ import annotations

import math
from pathlib import Path

from ...catalog import get_cluster
from ...specs import ModelSpec, ParallelPlan, TrainingSpec
from .data import Case, _read

__all__ = ["mosaicml_cases", "MPT_SIZES", "MOSAICML_ASSUMPTIONS"]

MPT_SIZES = {"125m": (768, 12, 12), "350m": (1024, 16, 24), "760m": (1536, 12, 24), "1b": (2048, 16, 24),
             "3b": (2560, 20, 32), "7b": (4096, 32, 32), "13b": (5120, 40, 40), "30b": (7168, 56, 48),
             "70b": (8192, 64, 80)}
"""d_model, n_heads, n_layers of llm-foundry's scripts/train/yamls/pretrain/mpt-<size>.yaml."""

CLUSTERS = {"a100_80gb": "dgx-a100", "a100_40gb": "dgx-a100-40gb", "h100_80gb": "dgx-h100"}

MOSAICML_ASSUMPTIONS = [
    "clusters dgx-a100 / dgx-a100-40gb (8 x 200 Gb/s per node = the stated 1600 Gbps) and dgx-h100 (not stated)",
    "MPT: learned positions of the sequence length, no biases, LayerNorm, GeLU, tied embeddings, vocab 50368",
    "stack composer (fsdp with Triton FlashAttention, the benchmark scripts' default); FULL_SHARD = ZeRO-3, SHARD_GRAD_OP = ZeRO-2; activation checkpointing = full recomputation",
    "amp_bf16 / bf16 -> bf16, amp_fp8 -> fp8; rows whose global batch is not dp x micro-batch x accumulation "
    "steps are not priced (Composer accumulates a remainder micro-batch)",
]


def _mpt(size: str, seq: int) -> ModelSpec:
    h, heads, layers = MPT_SIZES[size]
    return ModelSpec(name=f"mpt-{size}", num_layers=layers, hidden_size=h, num_heads=heads, vocab_size=50368,
                     max_seq_len=seq, activation="gelu", norm="layernorm", position="learned", tie_embeddings=True,
                     bias=False)


def mosaicml_cases(data_dir: Path) -> tuple[list[Case], list[str]]:
    """(priced cases, labels of rows that cannot be expressed as a plan, with the reason)."""
    cases, skipped = [], []
    for row in _read(data_dir / "mosaicml" / "runs.csv"):
        size, seq, gpus = row["Model"], int(row["SeqLen (T)"]), int(row["# GPUs"])
        mb, accum, batch = int(row["MicroBatchSize"]), int(row["GradAccum"]), int(row["GlobalBatchSize"])
        label = f"mpt-{size} s{seq} x{gpus} {row['GPU']} {row['Precision']} mb{mb}x{accum}"
        if batch != gpus * mb * accum:
            skipped.append(f"{label}: global batch {batch} != {gpus} x {mb} x {accum}")
            continue
        dtype = "fp8" if "fp8" in row["Precision"] else "bf16"
        plan = ParallelPlan(dp=gpus, micro_batch_size=mb, zero_stage=3 if row["Sharding Strategy"] == "FULL_SHARD" else 2,
                            recompute="full" if row["Activation Checkpointing"] == "True" else "none")
        cluster = get_cluster(CLUSTERS[row["GPU"]], nodes=math.ceil(gpus / 8))
        step_s = float(row["GlobalBatchSize (T)"]) / float(row["Throughput (T/s)"])
        cases.append(Case(source="mosaicml-fsdp", label=label, model=_mpt(size, seq), cluster=cluster,
                          training=TrainingSpec(global_batch_size=batch, seq_len=seq, dtype=dtype, stack="composer"),
                          plan=plan, metric="step_time_s", published=step_s, origin="mosaicml"))
    return cases, skipped
