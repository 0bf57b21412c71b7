"""Narayanan et al. 2021 (SC21), Table 2 and the section 5.1 run: GPT-3 175B and the 530B model with
PTD parallelism (stack `megatron`) and with DeepSpeed ZeRO-3 and no model parallelism (stack
`deepspeed`), achieved TFLOP/s per GPU counted with eq. 3 (megatron2021/runs.csv, see its README).

Assumptions where the source is silent (ASSUMPTIONS["megatron2021-table2"]): ZeRO-3 rows use full
recomputation (a 175B model at 4 sequences of 2048 per GPU does not fit without it), fp16, no
FlashAttention; the 175B PTD rows list only the model-parallel size 96 (tp = 8, pp = 12 assumed, the
paper's "tp = 8 for large enough models"), the section 5.1 run none (tp = 8, pp = 16 assumed); micro-batch 1
and the interleaved schedule as for Table 1."""

from __future__ import annotations

import math
from pathlib import Path

from ...catalog import get_cluster
from ...specs import ParallelPlan, TrainingSpec
from .data import Case, _chunks, _gpt, _read

__all__ = ["megatron_table2_cases", "TABLE2_ASSUMPTIONS"]

TABLE2_ASSUMPTIONS = [
    "ZeRO-3 rows: stack deepspeed (DeepSpeed ZeRO-3 inside the Megatron codebase), dp = GPUs, the stated "
    "micro-batch, full recomputation (not stated; 175B at micro-batch 4 does not fit without it), fp16",
    "PTD rows: stack megatron as Table 1; 175B rows state only tp*pp = 96: tp = 8, pp = 12 assumed; 530B rows "
    "tp = 8, pp = 35 as Table 1",
    "section 5.1 (175B on 1,024 GPUs at 140 TFLOP/s): tp and pp not stated; tp = 8, pp = 16, dp = 8 assumed",
]


def megatron_table2_cases(data_dir: Path) -> list[Case]:
    """Table 2 rows and the section 5.1 row of megatron2021/runs.csv (TFLOP/s per GPU)."""
    out = []
    for row in _read(data_dir / "megatron2021" / "runs.csv"):
        table = row["table"]
        if table == "Table 1":
            continue
        layers, hidden, heads = int(row["num_layers"]), int(row["hidden_size"]), int(row["num_heads"])
        gpus, batch = int(row["num_gpus"]), int(row["global_batch"])
        model = _gpt(row["model_name"], layers, hidden, heads, int(row["vocab_size"]), int(row["seq_len"]))
        zero3 = "ZeRO-3" in table
        if zero3:
            plan = ParallelPlan(dp=gpus, micro_batch_size=int(row["micro_batch"]), zero_stage=3, recompute="full")
            name, stack = "megatron2021-zero3", "deepspeed"
        else:
            tp = int(row["tp"] or 8)
            pp = int(row["pp"] or (12 if gpus % 96 == 0 else 16))
            v = _chunks(layers // pp)
            plan = ParallelPlan(dp=gpus // (tp * pp), tp=tp, pp=pp, micro_batch_size=1, virtual_stages=v,
                                schedule="interleaved-1f1b" if v > 1 else "1f1b", recompute="full")
            name, stack = "megatron2021-ptd", "megatron"
        training = TrainingSpec(global_batch_size=batch, seq_len=int(row["seq_len"]), dtype="fp16",
                                flash_attention=False, stack=stack)
        out.append(Case(source=name, label=f"{row['model_name']}@{gpus}" + ("" if table.startswith("Table") else " (5.1)"),
                        model=model, cluster=get_cluster("dgx-a100", nodes=math.ceil(gpus / int(row["gpus_per_node"]))),
                        training=training, plan=plan, metric="tflops_per_gpu",
                        published=float(row["measured_tflops_per_gpu"]), origin="megatron2021"))
    return out
