"""Text, JSON and CSV views of search results for the CLI, and the argument plumbing of `paraplan plan`
and `paraplan sweep` (kept here so planner/cli.py's sections stay thin)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from costmodel.atomic import write_text_atomic
from costmodel.specs import load_plan

from .result import GIB, SearchResult

__all__ = ["add_search_args", "constraints_from_args", "format_table", "result_json", "write_text_atomic",
           "write_csv_atomic"]

_KNOB_ARGS = {"dp": "dp", "tp": "tp", "pp": "pp", "cp": "cp", "ep": "ep", "micro_batch": "micro_batch_size",
              "virtual_stages": "virtual_stages", "schedule": "schedule", "zero": "zero_stage",
              "recompute": "recompute", "sequence_parallel": "sequence_parallel"}
_PLAN_FILE_FIELDS = {"dp", "tp", "pp", "cp", "ep", "micro_batch_size", "virtual_stages", "schedule", "zero_stage",
                     "recompute", "sequence_parallel"}


def add_search_args(p: argparse.ArgumentParser) -> None:
    """Search bounds and options (the knob flags themselves come from cli.add_plan_args)."""
    for axis in ("dp", "tp", "pp", "cp", "ep"):
        p.add_argument(f"--max-{axis}", type=int, default=None, help=f"largest {axis} degree to consider")
    p.add_argument("--max-micro-batch", type=int, default=None, help="largest micro-batch size (default 16)")
    p.add_argument("--max-virtual-stages", type=int, default=None, help="largest interleaving depth (default 8)")
    p.add_argument("--placement", action="append", default=None, metavar="ORDER",
                   help="mesh-axis order innermost first, e.g. tp-cp-dp-pp (repeatable), 'tp-first' or 'all'")
    p.add_argument("--allow-fewer-gpus", action="store_true", help="also consider using fewer GPUs")
    p.add_argument("--min-gpus", type=int, default=None, help="with --allow-fewer-gpus: fewest GPUs to use")
    p.add_argument("--rebalance", action="store_true",
                   help="also try balanced uneven layer splits where the layers divide evenly")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")


def constraints_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword constraints for `planner.search` from the command line (and `--plan FILE`, whose knobs
    are fixed unless a flag overrides them)."""
    out: dict[str, Any] = {}
    if getattr(args, "plan", None):
        fixed = load_plan(args.plan).model_dump()
        out.update({k: v for k, v in fixed.items() if k in _PLAN_FILE_FIELDS})
    for arg, key in _KNOB_ARGS.items():
        value = getattr(args, arg, None)
        if value is not None:
            out[key] = value
    for axis in ("dp", "tp", "pp", "cp", "ep"):
        if getattr(args, f"max_{axis}", None) is not None:
            out[f"max_{axis}"] = getattr(args, f"max_{axis}")
    if args.max_micro_batch is not None:
        out["max_micro_batch_size"] = args.max_micro_batch
    if args.max_virtual_stages is not None:
        out["max_virtual_stages"] = args.max_virtual_stages
    if args.placement:
        out["placement"] = args.placement[0] if args.placement in (["all"], ["tp-first"]) else args.placement
    if args.allow_fewer_gpus:
        out["allow_fewer_gpus"] = True
    if args.min_gpus is not None:
        out["min_gpus"] = args.min_gpus
    return out


def format_table(result: SearchResult, *, max_rejections: int = 6) -> str:
    """The ranked plans as a text table, then counts, rejections and the message."""
    lines = []
    if result.plans:
        df = result.to_frame()
        table = pd.DataFrame({
            "#": df["rank"], "plan": df["plan"], "gpus": df["num_gpus"],
            "step s": df["step_time_s"].map("{:.3f}".format),
            "tokens/s": df["tokens_per_s"].map("{:,.0f}".format), "MFU": df["mfu"].map("{:.1%}".format),
            "peak GiB": (df["peak_bytes"] / GIB).map("{:.1f}".format),
            "bubble s": df["bubble_s"].map("{:.3f}".format),
            "comm s": (df["tp_comm_s"] + df["cp_comm_s"] + df["ep_comm_s"] + df["dp_comm_s"]
                       + df["pp_comm_s"]).map("{:.3f}".format),
            "placement": df["placement"], "layers/stage": df["layers_per_stage"].map(_short_split),
            "runs": df["not_runnable"].map(lambda why: f"no ({why.split(':', 1)[0]})" if why else "yes"),
        })
        if (df["ep"] > 1).any():   # expert parallelism: its all-to-all share of the communication
            table.insert(table.columns.get_loc("comm s") + 1, "all-to-all s", df["ep_comm_s"].map("{:.3f}".format))
        if df["equivalent"].any():
            table["same as"] = df["equivalent_placements"].map(lambda s: s or "-")
        lines.append(table.to_string(index=False))
        best = result.plans[0].estimate
        lines.append(f"times assume stack {best.stack}; kernels: "
                     + (f"measured GPU profile ({best.gpu_profile})" if best.gpu_profile
                        else "the stack's analytical efficiencies (no GPU profile)"))
        reasons: dict[str, list[str]] = {}
        for r in result.plans:
            if not r.runnable:
                reasons.setdefault(r.not_runnable, []).append(f"#{r.rank}")
        lines += [f"not runnable by the executor: {', '.join(ranks)}: {why}" for why, ranks in reasons.items()]
    lines.append(result.summary())
    if result.rejections:
        top = result.rejections_frame().head(max_rejections)
        lines.append("rejected: " + "; ".join(f"{r.reason} ({r.plans:,})" for r in top.itertuples()))
    return "\n".join(lines)


def _short_split(text: str) -> str:
    if not text:
        return "even"
    parts = text.split(",")
    return text if len(parts) <= 6 else ",".join(parts[:3]) + ",...," + ",".join(parts[-2:])


def result_json(result: SearchResult) -> str:
    """The result as JSON: ranked StepEstimates (plan embedded), Pareto fronts, counts, rejections."""
    def est(r: Any) -> dict[str, Any]:
        return {"rank": r.rank, "runnable": r.runnable, "not_runnable": r.not_runnable,
                **json.loads(r.estimate.model_dump_json(exclude={"timeline"})),
                "equivalent": [json.loads(p.model_dump_json()) for p in r.equivalent],
                "equivalent_note": r.equivalent_note}

    return json.dumps({
        "plans": [est(r) for r in result.plans],
        "pareto_memory": [est(r) for r in result.pareto_memory],
        "pareto_gpus": [est(r) for r in result.pareto_gpus],
        "rejections": result.rejections, "num_candidates": result.num_candidates,
        "num_valid": result.num_valid, "num_fit": result.num_fit, "num_rescored": result.num_rescored,
        "elapsed_s": result.elapsed_s, "message": result.message, "num_folded": result.num_folded,
    }, indent=2)


def write_csv_atomic(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    return write_text_atomic(path, df.to_csv(index=False))
