"""The memory model against measured per-GPU memory: published runs (torchtitan's Llama 3.1 tables, the
caching allocator's reserved peak) and paraplan's executor on one H200 (allocated peak). Nothing is fitted
to these rows: every figure comes from the stacks' files (`costmodel/data/stacks/*.yaml`).

Each row: predicted / measured - 1 of the figure the source reports (`metric`: `reserved` =
torch.cuda.max_memory_reserved, `allocated` = max_memory_allocated)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ...catalog import get_cluster, load_model
from ...specs import ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec
from ...stacks import get_stack
from ...step.costs import step_costs
from ...step.estimate import comm_model, estimate, knobs_from_plan, step_context
from .data import _read, find_data_dir
from .h200 import h200_runs

__all__ = ["MemoryCase", "MEMORY_SETS", "memory_cases", "run_memory_validation", "memory_summary_text"]

GIB = 2.0**30
MEMORY_SETS = ("torchtitan", "h200-executor")
_TORCHTITAN_MODELS = {"llama3.1-8b": "llama3-8b", "llama3.1-70b": "llama3-70b", "llama3.1-405b": "llama3-405b"}


@dataclass(frozen=True)
class MemoryCase:
    """One measured run: what to estimate, which figure the source reports, and its value in GiB."""

    source: str
    label: str
    model: ModelSpec
    cluster: ClusterSpec
    training: TrainingSpec
    plan: ParallelPlan
    metric: str            # 'reserved' or 'allocated'
    measured_gib: float
    plain_loop_gib: float | None = None   # h200-executor: the plain torch loop's allocated peak


def torchtitan_cases(data_dir: Path) -> tuple[list[MemoryCase], list[str]]:
    """The priced rows of torchtitan_memory/runs.csv, and the rows it cannot price with why."""
    cases, skipped = [], []
    for row in _read(data_dir / "torchtitan_memory" / "runs.csv"):
        label = (f"Table {row['table']} {row['model']} fsdp{row['fsdp']} tp{row['tp']} pp{row['pp']} cp{row['cp']} "
                 f"s{row['seq_len']} lbs{row['local_batch']} {row['activation_checkpointing']}"
                 + (" compile" if row["compile"] == "true" else "") + (" fp8" if row["float8"] == "true" else "")
                 + (" asyncTP" if row["async_tp"] == "true" else ""))
        if int(row["pp"]) > 1:
            skipped.append(f"{label}: the micro-batches and layers per stage of its pipeline are not stated")
            continue
        seq = int(row["seq_len"])
        base = load_model(_TORCHTITAN_MODELS[row["model"]])
        model = base.model_copy(update={"max_seq_len": max(base.max_seq_len, seq)})
        fsdp, tp, cp, lbs = int(row["fsdp"]), int(row["tp"]), int(row["cp"]), int(row["local_batch"])
        gpus = int(row["gpus"])
        cluster = get_cluster("dgx-h100", nodes=max(1, gpus // 8))
        training = TrainingSpec(global_batch_size=fsdp * lbs, seq_len=seq, dtype="fp8" if row["float8"] == "true" else "bf16",
                                stack="torch-compile" if row["compile"] == "true" else "fsdp")
        plan = ParallelPlan(dp=fsdp, tp=tp, cp=cp, micro_batch_size=lbs, zero_stage=3,
                            recompute=row["activation_checkpointing"], sequence_parallel=tp > 1)
        cases.append(MemoryCase("torchtitan", label, model, cluster, training, plan, "reserved",
                                float(row["memory_gib"])))
    return cases, skipped


def h200_memory_cases(data_dir: Path) -> list[MemoryCase]:
    """paraplan's executor on one H200 (h200_executor/runs.csv): its allocated peak. The runs used the
    executor's earlier multi-tensor AdamW over whole parameter groups on CUDA; it now runs the fused kernel
    (the stack file), so each row is priced as it ran: stack `paraplan` with that optimizer (`legacy`)."""
    return [MemoryCase("h200-executor", r.label, r.model, r.cluster, r.training, r.plan, "allocated",
                       float(r.row["measured_executor_peak_gib"]), plain_loop_gib=float(r.row["measured_plain_peak_gib"]))
            for r in h200_runs(data_dir)]


def legacy_executor_allocated_bytes(case: MemoryCase) -> float:
    """The allocated peak of the executor as it was when the H200 rows were measured: foreach AdamW on
    CUDA over its decay / no-decay groups, whose sqrt(v) temporary covers a whole group (about every
    parameter); otherwise stack `paraplan` as shipped."""
    stack = get_stack("paraplan")
    legacy = stack.model_copy(update={"kernels": stack.kernels.model_copy(update={"optimizer": "foreach"}),
                                      "memory": stack.memory.model_copy(update={"foreach_group": "all"})})
    ctx = replace(step_context(case.model, case.cluster, case.training), stack=legacy, memo={})
    out = step_costs(ctx, knobs_from_plan(case.plan), comm_model(case.cluster, case.plan))
    return float(out["allocated_bytes"])


def memory_cases(data_dir: Path) -> tuple[list[MemoryCase], list[str]]:
    """Every measured memory row shipped in `data_dir`, and the rows that cannot be priced."""
    cases: list[MemoryCase] = []
    skipped: list[str] = []
    if (data_dir / "torchtitan_memory" / "runs.csv").is_file():
        more, skip = torchtitan_cases(data_dir)
        cases += more
        skipped += [f"torchtitan: {s}" for s in skip]
    if (data_dir / "h200_executor" / "runs.csv").is_file():
        cases += h200_memory_cases(data_dir)
    return cases, skipped


def _row(case: MemoryCase) -> dict:
    est = estimate(case.model, case.cluster, case.training, case.plan, calibration=False)
    mem = est.memory
    figure = {"reserved": mem.reserved_bytes, "allocated": mem.allocated_bytes}[case.metric] / GIB
    if case.source == "h200-executor":
        figure = legacy_executor_allocated_bytes(case) / GIB
    return {"set": case.source, "label": case.label, "stack": est.stack, "plan": est.plan.short(),
            "metric": case.metric, "measured_gib": case.measured_gib, "predicted_gib": figure,
            "error": figure / case.measured_gib - 1, "allocated_gib": mem.allocated_bytes / GIB,
            "reserved_gib": mem.reserved_bytes / GIB, "peak_gib": mem.peak_bytes / GIB, "moment": mem.describe(),
            "plain_loop_gib": case.plain_loop_gib,
            "bf16_logits_gib": 2 * case.plan.micro_batch_size * case.training.seq_len * case.model.vocab_size / GIB}


@dataclass
class MemoryValidation:
    rows: pd.DataFrame
    summary: pd.DataFrame
    skipped: tuple[str, ...] = ()


def run_memory_validation(data_dir: str | Path | None = None) -> MemoryValidation:
    """Predict every measured memory row; per-set mean / max |error|."""
    cases, skipped = memory_cases(find_data_dir(data_dir))
    rows = pd.DataFrame([_row(c) for c in cases])
    summary = []
    for name in MEMORY_SETS:
        sub = rows[rows["set"] == name] if not rows.empty else rows
        if sub.empty:
            continue
        err = sub["error"].abs()
        summary.append({"set": name, "metric": sub["metric"].iloc[0], "rows": len(sub), "mean_abs_error": err.mean(),
                        "max_abs_error": err.max(), "mean_signed_error": sub["error"].mean()})
    return MemoryValidation(rows, pd.DataFrame(summary), tuple(skipped))


def memory_summary_text(result: MemoryValidation) -> str:
    """One line per set."""
    lines = ["per-GPU memory:"]
    for r in result.summary.itertuples():
        lines.append(f"  {r.set:<18} {r.metric:<9} {r.rows:3d} rows  mean |error| {r.mean_abs_error:6.1%}  "
                     f"max |error| {r.max_abs_error:6.1%}  mean signed {r.mean_signed_error:+6.1%}")
    return "\n".join(lines)
