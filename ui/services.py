"""The UI's calls into paraplan's public APIs, turned into plain data for the pages (no Streamlit).

Every call goes through a package's public surface (`planner.search`, `costmodel.estimate`, ...). An
API that has not landed yet is reported by `missing()` so a page can say "not available yet" instead
of showing a made-up result."""

from __future__ import annotations

import importlib
import inspect
import shlex
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from costmodel import ParallelPlan, Rejection, StepEstimate
from planner.result import RankedPlan
from ui.charts import GIB
from ui.problem import Problem

__all__ = [
    "api", "missing", "has_module", "RankedPlan", "SearchView", "plan_row", "plan_table", "search_view", "estimate_plan",
    "torchrun_command", "parse_sweep_values", "add_cost", "cli_subcommands", "cli_options", "sweep_frame",
]


def api(dotted: str) -> Any | None:
    """The object at `package.module.name`, or None while it does not exist yet."""
    module, _, name = dotted.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return None if inspect.ismodule(obj) else obj  # `planner.search` may still be just the submodule


def has_module(name: str) -> bool:
    """Whether module `name` exists, without importing it (the executor's modules pull in torch)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing(*dotted: str) -> list[str]:
    """Which of the given APIs are not available yet."""
    return [d for d in dotted if api(d) is None]


@dataclass(frozen=True)
class SearchView:
    """What the Plan page shows: ranked plans, their table, rejections by reason, the Pareto front."""

    ranked: tuple[RankedPlan, ...]
    table: pd.DataFrame
    rejections: pd.DataFrame
    pareto: pd.DataFrame
    pareto_gpus: pd.DataFrame
    message: str | None
    evaluated: int
    elapsed_s: float

    @property
    def fits(self) -> bool:
        return bool(self.ranked)

    def by_label(self, label: str) -> RankedPlan:
        for r in self.ranked:
            if r.label == label:
                return r
        raise ValueError(f"plan {label!r} is not in the current result; pick one of the ranked plans")


def plan_row(plan: ParallelPlan, est: StepEstimate, *, equivalent: tuple[ParallelPlan, ...] = ()
             ) -> dict[str, Any]:
    """One table row: the plan and its placement, the figures (units in the column names), the knobs;
    `same_as` lists the placements folded into it (planner.fold)."""
    return {
        "plan": plan.short(), "placement": "-".join(plan.placement),
        "same_as": ", ".join("-".join(e.placement) for e in equivalent),
        "step_time_s": est.step_time_s, "tokens_per_s": round(est.tokens_per_s), "mfu": est.mfu,
        "tflops_per_gpu": est.model_tflops_per_gpu, "memory_gib": est.memory.peak_bytes / GIB,
        "headroom_gib": (est.capacity_bytes - est.memory.peak_bytes) / GIB, "num_gpus": est.num_gpus,
        "dp": plan.dp, "tp": plan.tp, "pp": plan.pp, "cp": plan.cp, "ep": plan.ep,
        "micro_batch": plan.micro_batch_size, "virtual_stages": plan.virtual_stages,
        "schedule": plan.schedule if plan.pp > 1 else "-", "zero": plan.zero_stage,
        "recompute": plan.recompute, "seq_parallel": plan.sequence_parallel,
    }


def plan_table(ranked: tuple[RankedPlan, ...] | list[RankedPlan]) -> pd.DataFrame:
    """The ranked plans as a DataFrame indexed by rank; `executor`: 'runs', or why it cannot run the plan."""
    rows = [{"rank": r.rank, **plan_row(r.plan, r.estimate, equivalent=r.equivalent),
             "executor": r.not_runnable or "runs"} for r in ranked]
    return pd.DataFrame(rows).set_index("rank") if rows else pd.DataFrame(
        columns=["plan", "placement", "same_as", "step_time_s", "tokens_per_s", "mfu", "tflops_per_gpu",
                 "memory_gib", "headroom_gib"])


def _front(entries: Any) -> pd.DataFrame:
    rows = [plan_row(e.plan, e.estimate, equivalent=e.equivalent) for e in entries or ()]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["plan", "step_time_s", "memory_gib", "num_gpus"])


def search_view(problem: Problem, *, top_k: int = 10) -> SearchView:
    """Run `planner.search` for the problem and shape its `SearchResult` for the pages: ranked plans,
    rejections by reason, and the Pareto fronts over every plan that fits (not only the top k)."""
    search = api("planner.search")
    if search is None:
        raise RuntimeError("planner.search is not available yet")
    t0 = time.perf_counter()
    result = search(problem.model, problem.cluster, problem.training, top_k=top_k, topology=problem.topology(),
                    **problem.constraints)
    elapsed = time.perf_counter() - t0
    ranked = tuple(result.plans)
    table = plan_table(ranked)
    message = result.message or (None if ranked else "No plan fits this model on this cluster.")
    rejections = result.rejections_frame()
    rejections = rejections[rejections["plans"] > 0].reset_index(drop=True)
    return SearchView(ranked=ranked, table=table, rejections=rejections,
                      pareto=_front(result.pareto_memory), pareto_gpus=_front(result.pareto_gpus),
                      message=message if not ranked else None, evaluated=int(result.num_candidates),
                      elapsed_s=elapsed)


def estimate_plan(problem: Problem, plan: ParallelPlan, *, timeline: bool = True) -> StepEstimate | Rejection:
    """`costmodel.evaluate` (an estimate or a Rejection) of one plan, with the simulated timeline."""
    evaluate = api("costmodel.evaluate")
    if evaluate is not None:
        return evaluate(problem.model, problem.cluster, problem.training, plan, timeline=timeline,
                        topology=problem.topology())
    estimate = api("costmodel.estimate")
    if estimate is None:
        raise RuntimeError("costmodel.estimate is not available yet")
    return estimate(problem.model, problem.cluster, problem.training, plan, timeline=timeline,
                    topology=problem.topology())


def torchrun_command(problem: Problem, plan: ParallelPlan, *, steps: int = 1000) -> str:
    """The executor's torchrun command line for `plan` on the problem's cluster (run it on every node
    with its --node-rank; MASTER_ADDR is node 0), built by `executor.prepare_run`, which also checks the
    plan against the model. ValueError when the executor refuses the plan (with its reason)."""
    from costmodel import list_models, load_model

    prepare_run = api("executor.prepare_run")
    if prepare_run is None:
        raise RuntimeError("executor.prepare_run is not available yet")
    cluster, training, model = problem.cluster, problem.training, problem.model
    nnodes = -(-plan.world_size // cluster.gpus_per_node)
    catalog = model.name in list_models() and load_model(model.name) == model
    out = f"runs/{plan.short()}"
    setup = prepare_run(plan, model=model.name if catalog else model, steps=steps, out=out,
                        global_batch=training.global_batch_size, seq_len=training.seq_len,
                        dtype=training.dtype if training.dtype in ("fp32", "bf16", "fp16", "fp8") else "bf16",
                        nnodes=nnodes, node_rank=0, rdzv_endpoint="$MASTER_ADDR:29500")
    argv = ["python" if i == 0 else str(a).replace(str(setup.out_dir), out) for i, a in enumerate(setup.command)]
    if "--node-rank" in argv:
        argv[argv.index("--node-rank") + 1] = "$NODE_RANK"
    command = " ".join(a if a.startswith("$") else shlex.quote(a) for a in argv)
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# paraplan: {plan.short()} for {model.name} on {nnodes} x {cluster.gpus_per_node} {cluster.gpu.name} "
        f"({cluster.name}).",
        f"# Run on each of the {nnodes} nodes with NODE_RANK=0..{nnodes - 1} and MASTER_ADDR=<node 0>; put the",
        f"# plan JSON download at {out}/plan.json first.",
        "set -euo pipefail",
        ': "${MASTER_ADDR:?set MASTER_ADDR to node 0}" "${NODE_RANK:?set NODE_RANK}"',
        command, ""])


_NUMERIC_SWEEPS = {"nodes": int, "global_batch": int, "seq_len": int, "inter_node_bw": float}


def parse_sweep_values(vary: str, text: str) -> list[Any]:
    """'8, 16, 32' -> [8, 16, 32] for numeric variables; GPU names are checked against the catalog."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"{vary}: give at least one value, comma separated")
    if vary == "gpu":
        from costmodel import list_gpus

        known = list_gpus()
        bad = [s for s in items if s.lower() not in known]
        if bad:
            raise ValueError(f"gpu: unknown GPU {', '.join(bad)}; known: {', '.join(known)}")
        return [s.lower() for s in items]
    cast = _NUMERIC_SWEEPS.get(vary)
    if cast is None:
        raise ValueError(f"vary={vary!r}: choose one of nodes, gpu, inter_node_bw, global_batch, seq_len")
    out = []
    for s in items:
        try:
            value = cast(float(s)) if cast is int and float(s).is_integer() else cast(s)
        except ValueError:
            raise ValueError(f"{vary}: {s!r} is not a {'whole ' if cast is int else ''}number") from None
        if value <= 0:
            raise ValueError(f"{vary}: {s!r} must be > 0")
        out.append(value)
    return out


def add_cost(df: pd.DataFrame, *, price_per_gpu_hour: float = 0.0) -> pd.DataFrame:
    """GPU-hours (and cost, when a price is given) to train on one billion tokens at the best plan's
    throughput: num_gpus / tokens_per_s * 1e9 / 3600."""
    out = df.copy()
    out["gpu_hours_per_1b_tokens"] = out["num_gpus"] / out["tokens_per_s"] * 1e9 / 3600.0
    if price_per_gpu_hour > 0:
        out["cost_per_1b_tokens"] = out["gpu_hours_per_1b_tokens"] * price_per_gpu_hour
    return out


def cli_subcommands() -> list[str]:
    """The `paraplan` subcommands this build has (the Run and Calibrate pages start them)."""
    import argparse

    from planner.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    return []


def cli_options(subcommand: str) -> list[str]:
    """The option strings (`--steps`, ...) a `paraplan` subcommand accepts ([] when it is missing)."""
    import argparse

    from planner.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction) and subcommand in action.choices:
            return [o for a in action.choices[subcommand]._actions for o in a.option_strings]
    return []


def sweep_frame(problem: Problem, *, vary: str, values: list[Any]) -> pd.DataFrame:
    """`planner.sweep` over `values` of `vary` (inter-node bandwidth given in Gb/s per NIC), with a
    `fits` column and the swept value kept numeric for charting."""
    sweep = api("planner.sweep")
    if sweep is None:
        raise RuntimeError("planner.sweep is not available yet")
    passed = [f"{v:g}Gbps" for v in values] if vary == "inter_node_bw" else list(values)
    df = sweep(problem.model, problem.cluster, problem.training, vary=vary, values=passed,
               topology=problem.topology(), **problem.constraints)
    df[vary] = list(values)
    df["fits"] = df["tokens_per_s"].notna()
    if "peak_gib" in df:
        df["memory_gib"] = df["peak_gib"]
    if "capacity_bytes" in df:
        df["capacity_gib"] = df["capacity_bytes"] / GIB
    df["tokens_per_s"] = df["tokens_per_s"].round()
    # the figures first (GiB, not bytes), then the knobs and the search's accounting
    first = [vary, "fits", "plan", "placement", "step_time_s", "tokens_per_s", "mfu", "model_tflops_per_gpu",
             "memory_gib", "capacity_gib", "num_gpus", "cluster_gpus"]
    rest = [c for c in df.columns if c not in first and not c.endswith("_bytes") and c != "peak_gib"]
    return df[[c for c in first if c in df.columns] + rest]
