"""The executor's single-GPU runs on an H200 (h200_executor/README.md), priced with stack `paraplan`
on one H200 of `dgx-h200`, without a GPU profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...catalog import get_cluster, load_model
from ...specs import ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec
from .data import Case, _read

__all__ = ["h200_cases", "h200_runs", "H200Run", "LLAMA32_1B"]

LLAMA32_1B = ModelSpec(name="llama-3.2-1b", num_layers=16, hidden_size=2048, num_heads=32, num_kv_heads=8,
                       ffn_hidden_size=8192, vocab_size=128256, max_seq_len=131072, activation="swiglu", norm="rmsnorm",
                       position="rope", tie_embeddings=True, bias=False, source="Llama 3.2 1B config.json")
"""The public config.json fields of Llama 3.2 1B the run used."""


@dataclass(frozen=True)
class H200Run:
    """One row of h200_executor/runs.csv as specs (stack `paraplan`, one H200 of `dgx-h200`)."""

    label: str
    model: ModelSpec
    cluster: ClusterSpec
    training: TrainingSpec
    plan: ParallelPlan
    row: dict[str, str]


def h200_runs(data_dir: Path) -> list[H200Run]:
    """Every executor run of the H200 set."""
    cluster = get_cluster("dgx-h200", nodes=1, gpus_per_node=1)
    out = []
    for row in _read(data_dir / "h200_executor" / "runs.csv"):
        name = row["model"]
        model = LLAMA32_1B if name.startswith("llama-3.2-1b") else load_model(name)
        plan = ParallelPlan(micro_batch_size=int(row["micro_batch"]), recompute=row["recompute"])
        training = TrainingSpec(global_batch_size=int(row["global_batch"]), seq_len=int(row["seq_len"]), stack="paraplan")
        out.append(H200Run(f"{model.name} s{row['seq_len']} {plan.short()}", model, cluster, training, plan, row))
    return out


def h200_cases(data_dir: Path) -> list[Case]:
    """One case per executor run (measured_executor_step_s)."""
    return [Case(source="h200-executor", label=r.label, model=r.model, cluster=r.cluster, training=r.training,
                 plan=r.plan, metric="step_time_s", published=float(r.row["measured_executor_step_s"]),
                 origin="h200-executor") for r in h200_runs(data_dir)]
