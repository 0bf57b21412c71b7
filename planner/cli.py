"""The `paraplan` command: a thin dispatcher whose subcommands call each package's public API.

Bad input ends with a one-line `paraplan: error: ...` naming the field, and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from costmodel import (
    ClusterSpec,
    ModelSpec,
    ParallelPlan,
    TrainingSpec,
    format_validation_error,
    get_cluster,
    load_model,
    load_plan,
)

from .cli_args import (
    CliUsageError,
    Parser,
    default_help,
    fraction,
    nonnegative_int,
    output_file,
    positive_float,
    positive_int,
)

__all__ = ["main", "build_parser"]

Handler = Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------- shared arguments and spec builders
def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gpt3-175b", help="catalog name, ModelSpec YAML/JSON, or a Hugging Face config.json (or its model folder)")


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", default="dgx-a100", help="cluster preset or ClusterSpec YAML/JSON file")
    p.add_argument("--nodes", type=positive_int, default=1, help="number of nodes")
    p.add_argument("--gpu", default=None, help="swap the preset's GPU type (e.g. h100-sxm)")
    p.add_argument("--inter-node-bw", default=None, metavar="BW",
                   help="what-if NIC bandwidth per NIC, e.g. 400Gbps or 50GB/s")
    p.add_argument("--intra-node-bw", default=None, metavar="BW",
                   help="what-if server-fabric (NVLink/PCIe) bandwidth per GPU, e.g. 900GB/s")
    p.add_argument("--oversubscription", default=None, metavar="RATIO",
                   help="what-if leaf/spine oversubscription, e.g. 2 or 2:1")
    p.add_argument("--topology", default=None, metavar="FILE",
                   help="cluster graph YAML/JSON (nodes and links); sizes the cluster to it")
    p.add_argument("--calibration", default=None, metavar="PROFILE.json",
                   help="a calibration profile (paraplan profile / calibrate) to use instead of defaults")
    p.add_argument("--gpu-profile", default=None, metavar="NAME|FILE",
                   help="a measured GPU profile (shipped name or `paraplan profile --device cuda` file); refused "
                        "when measured on another GPU than the cluster's")


def add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--global-batch", type=positive_int, default=None, help="sequences per step (default: 8 per GPU)")
    p.add_argument("--seq-len", type=positive_int, default=None, help="sequence length (default: model's max)")
    p.add_argument("--dtype", default="bf16", choices=["fp32", "tf32", "bf16", "fp16", "fp8"],
                   help="compute dtype (default bf16); the GPU must have it (fp8: H100, H200, B200, MI300X, L40S)")
    p.add_argument("--stack", default="megatron", metavar="NAME",
                   help="software stack that runs the plan (costmodel/data/stacks): megatron (default), deepspeed, "
                        "fsdp, torch-compile, paraplan")
    p.add_argument("--memory-margin", type=float, default=None, metavar="SHARE",
                   help="share of each GPU's memory to keep free: a plan fits when its peak <= capacity x "
                        "(1 - margin) (default 0.05)")
    p.add_argument("--moe-imbalance", type=positive_float, default=None, metavar="RATIO",
                   help="mixture of experts: tokens the busiest expert-parallel rank gets / the mean (default 1)")


def add_plan_args(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Plan knobs; every one defaults to None, so that only a flag the user gives sets it. With
    defaults=True (estimate) a knob set by neither a flag nor `--plan FILE` takes the ParallelPlan
    default (the help says which); with defaults=False (plan, sweep) it is free for the planner."""
    h = default_help if defaults else (lambda name, text="": text or "free unless given")
    p.add_argument("--plan", default=None, help="a plan JSON file (knobs given on the line override it)")
    p.add_argument("--dp", type=positive_int, default=None,
                   help="data-parallel degree" + ("; default: fills the cluster, or the --plan file's" if defaults else ""))
    p.add_argument("--tp", type=positive_int, default=None, help=h("tp", "tensor-parallel degree"))
    p.add_argument("--pp", type=positive_int, default=None, help=h("pp", "pipeline stages"))
    p.add_argument("--cp", type=positive_int, default=None, help=h("cp", "context-parallel degree"))
    p.add_argument("--ep", type=positive_int, default=None,
                   help=h("ep", "expert-parallel degree (mixture of experts; divides dp*cp)"))
    p.add_argument("--micro-batch", type=positive_int, default=None, help=h("micro_batch", "sequences per micro-batch"))
    p.add_argument("--virtual-stages", type=positive_int, default=None, help=h("virtual_stages", "chunks per pipeline rank"))
    p.add_argument("--schedule", default=None, choices=["gpipe", "1f1b", "interleaved-1f1b", "zero-bubble"],
                   help=("default 1f1b (interleaved-1f1b with --virtual-stages), or the --plan file's"
                         if defaults else "free unless given"))
    p.add_argument("--zero", type=int, default=None, choices=[0, 1, 2, 3], help=h("zero", "ZeRO stage"))
    p.add_argument("--recompute", default=None, choices=["none", "selective", "full"], help=h("recompute"))
    p.add_argument("--sequence-parallel", action=argparse.BooleanOptionalAction, default=None,
                   help=h("sequence_parallel"))


def build_specs(args: argparse.Namespace) -> tuple[ModelSpec, ClusterSpec, TrainingSpec]:
    model = load_model(args.model)
    cluster = get_cluster(args.cluster, nodes=args.nodes, gpu=args.gpu)
    cluster, args.topology_graph = _interconnect(args, cluster)
    args.calibration_profile = _calibration(args, procs=cluster.gpus_per_node)
    seq_len = model.max_seq_len if args.seq_len is None else args.seq_len
    global_batch = 8 * cluster.num_gpus if args.global_batch is None else args.global_batch
    extra = {} if getattr(args, "moe_imbalance", None) is None else {"moe_load_imbalance": args.moe_imbalance}
    training = TrainingSpec(global_batch_size=global_batch, seq_len=seq_len, dtype=args.dtype,
                            stack=getattr(args, "stack", "megatron"), **extra)
    return model, cluster, training


def _interconnect(args: argparse.Namespace, cluster: ClusterSpec) -> tuple[ClusterSpec, Any]:
    """Apply --inter-node-bw/--intra-node-bw/--oversubscription, or load --topology (then the cluster
    is sized to the file and the graph is returned for estimate/search's `topology=`)."""
    from costmodel.network.whatif import apply_interconnect, cluster_for_topology

    flags = {"inter_node_bw": getattr(args, "inter_node_bw", None),
             "intra_node_bw": getattr(args, "intra_node_bw", None),
             "oversubscription": getattr(args, "oversubscription", None)}
    topo_file = getattr(args, "topology", None)
    if topo_file is None:
        return apply_interconnect(cluster, **flags), None
    given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
    if given:
        raise ValueError(f"--topology: cannot be combined with {', '.join(given)}; edit the file's links instead")
    return cluster_for_topology(cluster, topo_file)


def _calibration(args: argparse.Namespace, *, procs: int) -> Any:
    """The --calibration profile, loaded and validated, or None. A CPU profile describes `procs` worker
    processes per host: its measured host terms apply (`costmodel.calibration.host_terms.with_host_terms`)."""
    path = getattr(args, "calibration", None)
    gpu_profile = getattr(args, "gpu_profile", None)
    if gpu_profile is not None:
        if path is not None:
            raise ValueError("--gpu-profile: give either --gpu-profile or --calibration, not both")
        from costmodel.calibration.gpu_profiles import load_gpu_profile

        return load_gpu_profile(gpu_profile)
    if path is None:
        return None
    from costmodel.calibration.host_terms import with_host_terms
    from costmodel.calibration.profile_spec import load_profile

    return with_host_terms(load_profile(path), procs=procs)


def cost_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for estimate/evaluate/search from the shared flags (topology, calibration,
    memory margin)."""
    out = {"topology": getattr(args, "topology_graph", None),
           "calibration": getattr(args, "calibration_profile", None)}
    margin = getattr(args, "memory_margin", None)
    if margin is not None:
        if not 0 <= margin < 1:
            raise ValueError(f"--memory-margin {margin}: give a share of the GPU's memory in [0, 1), e.g. 0.05")
        out["memory_margin"] = margin
    return out


_PLAN_FIELDS = {"dp": "dp", "tp": "tp", "pp": "pp", "cp": "cp", "ep": "ep", "micro_batch": "micro_batch_size",
                "virtual_stages": "virtual_stages", "schedule": "schedule", "zero": "zero_stage",
                "recompute": "recompute", "sequence_parallel": "sequence_parallel", "cp_attention": "cp_attention"}


def plan_from_args(args: argparse.Namespace, *, world_size: int | None = None) -> ParallelPlan:
    """A ParallelPlan from `--plan FILE` and/or the knob flags: the file's every field, then each flag
    the user gave; what neither sets takes the ParallelPlan default, and dp fills `world_size`. A flag
    that changes the stage count (pp, virtual stages) drops the file's layers_per_stage (even split)."""
    base = load_plan(args.plan).model_dump() if args.plan else {}
    stages = (base.get("pp", 1), base.get("virtual_stages", 1))
    for arg, field in _PLAN_FIELDS.items():
        value = getattr(args, arg, None)
        if value is not None:
            base[field] = value
    if base.get("layers_per_stage") is not None and (base.get("pp", 1), base.get("virtual_stages", 1)) != stages:
        base["layers_per_stage"] = None
        print("paraplan: note: --pp/--virtual-stages change the plan file's stage count; its layers_per_stage "
              "is dropped (even split)", file=sys.stderr)
    if base.get("virtual_stages", 1) > 1 and "schedule" not in base:
        base["schedule"] = "interleaved-1f1b"
    if base.get("dp") is None and world_size is not None:
        mp = base.get("tp", 1) * base.get("pp", 1) * base.get("cp", 1)
        if world_size % mp:
            raise ValueError(f"dp: tp*pp*cp={mp} does not divide the cluster's {world_size} GPUs; give --dp")
        base["dp"] = world_size // mp
    base = {k: v for k, v in base.items() if v is not None}
    return ParallelPlan(**base)


# ---------------------------------------------------------------- subcommands
# Each subcommand is a pair: _add_<name>(subparsers) registers it, _cmd_<name>(args) runs it.
# Sections are owned by the package they call; keep each one small and delegate to that package.

def _add_estimate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help="predict step time and memory of one plan")
    add_model_args(p)
    add_cluster_args(p)
    add_training_args(p)
    add_plan_args(p, defaults=True)
    p.add_argument("--cp-attention", default=None, choices=["auto", "all-gather", "ring"],
                   help="context-parallel attention (default auto: ring attention on GPUs, all-gather on CPU)")
    p.add_argument("--json", action="store_true", help="print the StepEstimate as JSON")
    p.add_argument("--timeline", type=output_file, default=None, metavar="TRACE.json",
                   help="write a Chrome/Perfetto trace (pipeline ops, sends, gradient reduction, optimizer)")
    p.set_defaults(handler=_cmd_estimate)


def _cmd_estimate(args: argparse.Namespace) -> int:
    from costmodel import estimate
    from costmodel.step.feasibility import oom_message
    from costmodel.step.report import format_estimate, write_text_atomic

    model, cluster, training = build_specs(args)
    plan = plan_from_args(args, world_size=cluster.num_gpus)
    est = estimate(model, cluster, training, plan, timeline=bool(args.timeline), **cost_options(args))
    if args.timeline:
        write_text_atomic(args.timeline, est.chrome_trace_json())
        print(f"wrote timeline ({len(est.timeline)} events) to {args.timeline}", file=sys.stderr)
    if args.json:
        print(est.model_dump_json(indent=2))
    else:
        print(format_estimate(est, model=model.name, cluster=f"{cluster.name} x{cluster.num_nodes}"))
        if not est.fits:
            print(f"paraplan: warning: {oom_message(est, cluster.gpu.name, max_pp=model.total_layers)}",
                  file=sys.stderr)
    return 0


def _add_validate_published(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate-published",
                       help="reproduce published training runs (Megatron-LM SC21, vTrain, MosaicML, MoE, torchtitan "
                            "memory) and report the error")
    p.add_argument("--data", default=None, help="folder holding megatron2021/, vtrain/ and moe2025/ (default: the "
                                                "copy shipped with paraplan)")
    p.add_argument("--out", type=output_file, default=None, metavar="VALIDATION.md",
                   help="write the report section into this file")
    p.add_argument("--csv", type=output_file, default=None, metavar="FILE", help="write predicted vs published per row as CSV")
    p.add_argument("--loso", action="store_true",
                   help="also fit the constants leaving each source out and report that error (several minutes)")
    p.set_defaults(handler=_cmd_validate_published)


def _cmd_validate_published(args: argparse.Namespace) -> int:
    from costmodel.calibration.published import run_validation, summary_text, update_validation_doc
    from costmodel.calibration.published.memory import memory_summary_text, run_memory_validation
    from costmodel.calibration.published.memory_doc import update_memory_doc
    from costmodel.calibration.published.moe import moe_summary_text, run_moe_validation, update_moe_doc

    result = run_validation(args.data)
    moe = run_moe_validation(args.data)   # mixtures of experts: held out, reported on their own
    print(summary_text(result))
    if not moe.empty:
        print(moe_summary_text(moe))
    memory = run_memory_validation(args.data)
    print(memory_summary_text(memory))
    loso = None
    if args.loso:
        from costmodel.calibration.published.loso import leave_one_source_out
        from costmodel.calibration.published.validate import all_cases

        loso = leave_one_source_out(all_cases(result.data_dir)[0], log=lambda m: print(m, file=sys.stderr, flush=True))
        print(loso.table.to_string(index=False, float_format=lambda x: f"{x:.1%}"))
    if args.csv:
        from costmodel.step.report import write_text_atomic
        write_text_atomic(args.csv, result.rows.to_csv(index=False))
    if args.out:
        update_validation_doc(args.out, result, loso=loso)
        update_moe_doc(args.out, moe)
        update_memory_doc(args.out, memory)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- ui (owned by ui/)
def _add_ui(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="start the Streamlit app (plan, inspect, compare, what-if, run)")
    p.add_argument("--address", default="127.0.0.1", help="address to serve on (default: localhost only)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="folder the app keeps its runs in (default: $PARAPLAN_RUNS or ./runs)")
    p.set_defaults(handler=_cmd_ui)


def _cmd_ui(args: argparse.Namespace) -> int:
    import os
    import subprocess
    from pathlib import Path

    import ui

    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}: use a port between 1 and 65535")
    app = Path(ui.__file__).parent / "app.py"
    argv = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.address,
            "--server.port", str(args.port), "--server.fileWatcherType", "none", "--server.headless", "true",
            "--browser.gatherUsageStats", "false"]
    env = dict(os.environ)
    if args.runs:
        env["PARAPLAN_RUNS"] = str(Path(args.runs).resolve())
    print(f"paraplan ui: http://{args.address}:{args.port}", file=sys.stderr)
    return subprocess.call(argv, env=env)


# ---------------------------------------------------------------- plan, sweep (owned by planner/)
def add_search_request_args(p: argparse.ArgumentParser) -> None:
    """Model, cluster, training, free plan knobs (constraints) and search options: plan and sweep."""
    from planner.report import add_search_args

    add_model_args(p)
    add_cluster_args(p)
    add_training_args(p)
    add_plan_args(p, defaults=False)
    add_search_args(p)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="search every parallel plan and print the fastest that fit")
    add_search_request_args(p)
    p.add_argument("--top-k", type=positive_int, default=10, help="plans to show (default 10)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--csv", type=output_file, default=None, metavar="FILE", help="write the ranked plans as CSV")
    p.add_argument("--save", type=output_file, default=None, metavar="PLAN.json",
                   help="write the best plan for the executor (and for estimate --plan)")
    p.add_argument("--runnable-only", action="store_true",
                   help="keep only plans the executor runs on the cluster's device (others are marked)")
    p.add_argument("--all-placements", action="store_true",
                   help="list plans that differ only in placement with the same figures one by one "
                        "(default: folded into the first, column 'same as')")
    p.set_defaults(handler=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    from costmodel import save_plan
    from planner import search
    from planner.report import constraints_from_args, format_table, result_json, write_csv_atomic

    model, cluster, training = build_specs(args)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = search(model, cluster, training, top_k=args.top_k, progress=progress, rebalance=args.rebalance,
                    runnable_only=args.runnable_only, fold_equivalent=not args.all_placements, **cost_options(args),
                    **constraints_from_args(args))
    print(result_json(result) if args.json else format_table(result))
    if not args.json and result.best is not None and model.is_moe:
        from planner.explain import explain_experts

        print(explain_experts(model, cluster, result.best.estimate, topology=getattr(args, "topology_graph", None)))
    if args.csv:
        write_csv_atomic(result.to_frame(), args.csv)
    if args.save and result.best is not None:
        save_plan(result.best.plan, args.save)
        print(f"saved {result.best.plan.short()} to {args.save}", file=sys.stderr)
    return 0 if result.best is not None else 1


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    from planner.sweep import VARIABLES

    p = sub.add_parser("sweep", help="what-if: the best plan as nodes, GPU, bandwidth, batch or seq-len vary")
    add_search_request_args(p)
    p.add_argument("--vary", required=True, choices=list(VARIABLES), help="the input to vary")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 8,16,32 or h100-sxm,h200")
    p.add_argument("--batch-per-gpu", type=positive_int, default=None, metavar="N",
                   help="sequences per GPU at every point (weak scaling). Default with --vary nodes and no "
                        "--global-batch: 8 per GPU, so the global batch grows with the cluster; with "
                        "--global-batch the global batch stays fixed (strong scaling)")
    p.add_argument("--csv", type=output_file, default=None, metavar="FILE", help="write the sweep as CSV")
    p.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from planner import sweep
    from planner.report import constraints_from_args, write_csv_atomic

    model, cluster, training = build_specs(args)
    values = [v.strip() for v in args.values.split(",") if v.strip()]
    per_gpu = args.batch_per_gpu
    if per_gpu is not None and args.global_batch is not None:
        raise ValueError("--batch-per-gpu: cannot be combined with --global-batch; give one of them")
    if per_gpu is None and args.vary == "nodes" and args.global_batch is None:
        per_gpu = 8
    df = sweep(model, cluster, training, vary=args.vary, values=values, global_batch_per_gpu=per_gpu,
               **cost_options(args), **constraints_from_args(args))
    if per_gpu is not None:
        print(f"paraplan: sweep: global batch = {per_gpu} sequences per GPU at every point (weak scaling); "
              "give --global-batch to hold it fixed", file=sys.stderr)
    cols = [args.vary, "plan", "num_gpus", "global_batch_size", "step_time_s", "tokens_per_s", "mfu", "peak_gib",
            "message"]
    print(df[cols].to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4g}"))
    print(f"times assume stack {training.stack}")
    if args.csv:
        write_csv_atomic(df, args.csv)
    return 0


# ---- run (executor): launch a plan with torchrun
def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train a plan for real with torchrun (Gloo on CPU, NCCL on GPUs)")
    p.add_argument("plan_file", metavar="PLAN.json", help="plan file (e.g. from `paraplan search`)")
    p.add_argument("--model", default="tiny-llama", help="catalog name or ModelSpec YAML/JSON")
    p.add_argument("--steps", type=int, default=50, help="train until this optimizer step")
    p.add_argument("--out", default=None, help="run directory (default runs/<plan file name>)")
    p.add_argument("--global-batch", type=int, default=None, help="sequences per step (default 8)")
    p.add_argument("--seq-len", type=int, default=None, help="default: the model's max (at most 1024)")
    p.add_argument("--seed", type=int, default=None, help="data/init seed (default 0, or the checkpoint's)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4)")
    p.add_argument("--warmup-steps", type=int, default=None, help="default lr-decay-steps // 10")
    p.add_argument("--lr-decay-steps", type=int, default=None,
                   help="cosine length (default --steps; a resumed run keeps its checkpoint's)")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16", "fp8"],
                   help="default fp32 on CPU, bf16 on GPUs; fp8 (torchao float8 linears) needs compute capability >= 8.9")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile each Transformer block (default: on with CUDA, off on CPU)")
    p.add_argument("--corpus", default=None, help="text file to train on (default: the built-in corpus)")
    p.add_argument("--ckpt-every", type=int, default=0, help="checkpoint every N steps and at the end")
    p.add_argument("--resume", default=None, help="run directory or checkpoint to resume from (any plan)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its metrics and checkpoints are deleted)")
    p.add_argument("--max-restarts", type=int, default=0, help="elastic restarts from the last checkpoint")
    p.add_argument("--timeout", type=float, default=300.0, help="collective timeout in seconds")
    p.add_argument("--scale-to", type=int, default=None, metavar="N",
                   help="shrink the plan to N processes (dp first, then pp, then tp)")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--rdzv-endpoint", default=None, help="HOST:PORT of node 0 (multi-node)")
    p.add_argument("--rdzv-timeout", type=float, default=120.0,
                   help="seconds to wait for node 0's rendezvous and for all nodes to join (multi-node)")
    p.add_argument("--log-every", type=int, default=10, help="progress line every N steps")
    p.add_argument("--eval-every", type=int, default=10,
                   help="validation loss/perplexity on the held-out split every N steps and at the end")
    p.add_argument("--eval-batches", type=int, default=2, help="validation batches per evaluation")
    p.add_argument("--dry-run", action="store_true",
                   help="print the torchrun command and exit (nothing is written)")
    p.add_argument("--trace-step", type=int, default=0, metavar="N",
                   help="write a torch.profiler trace of step N (every rank) to OUT/trace/; "
                        "that step is left out of the step-time median (default 0: none)")
    p.add_argument("--force", action="store_true",
                   help="launch even when the predicted memory does not fit this host (skip the memory guard)")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from executor.memguard import guard_run
    from planner.nearest import nearest_plan_hint

    def suggest(check: Any) -> str:   # the memory guard's nearest plan that fits, from the planner
        def runnable(plan: Any) -> bool:   # (imports the launcher only when some plan fits)
            from executor.launch import plan_unsupported

            return plan_unsupported(plan, global_batch=check.training.global_batch_size, model=check.model,
                                    seq_len=check.training.seq_len) is None

        return nearest_plan_hint(check, runnable=runnable)

    if not (args.force or args.resume or args.scale_to or args.rdzv_endpoint):   # refuse before importing the launcher
        guard_run(args.plan_file, model=args.model, global_batch=args.global_batch, seq_len=args.seq_len,
                  dtype=args.dtype, nnodes=args.nnodes, suggest=suggest)
    from executor.launch import RunFailed, launch, prepare_run

    out = args.out or str(Path("runs") / Path(args.plan_file).stem)
    setup = prepare_run(
        args.plan_file, model=args.model, steps=args.steps, out=out, global_batch=args.global_batch,
        seq_len=args.seq_len, seed=args.seed, lr=args.lr, warmup_steps=args.warmup_steps,
        lr_decay_steps=args.lr_decay_steps, ckpt_every=args.ckpt_every, resume=args.resume,
        max_restarts=args.max_restarts, timeout_s=args.timeout, scale_to=args.scale_to, nnodes=args.nnodes,
        node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint, dtype=args.dtype, corpus=args.corpus,
        log_every=args.log_every, compile=args.compile, overwrite=args.overwrite, rdzv_timeout_s=args.rdzv_timeout,
        eval_every=args.eval_every, eval_batches=args.eval_batches, force=args.force, suggest=suggest)
    for change in setup.changes:
        print(f"paraplan: scaled: {change}", file=sys.stderr)
    if args.trace_step:
        import dataclasses

        from executor.trace import TRACE_ENV

        if not 1 <= args.trace_step <= args.steps:
            raise ValueError(f"--trace-step {args.trace_step}: the run has {args.steps} steps; use 1 to {args.steps}")
        setup = dataclasses.replace(setup, env={**setup.env, TRACE_ENV: str(args.trace_step)})
    for note in setup.notes:
        print(f"paraplan: note: {note}", file=sys.stderr)
    if args.dry_run:
        print(f"paraplan: dry run, nothing written: a run first writes {setup.out_dir / 'plan.json'}, which this "
              f"command reads: {setup.plan.model_dump_json()}", file=sys.stderr)
        print(setup.command_line())
        return 0
    try:
        result = launch(setup)
    except RunFailed as exc:
        print(f"paraplan: error: run failed: {exc}", file=sys.stderr)
        return 1
    s = result.summary
    if s is not None:
        mfu = f", MFU {s.mfu:.1%}" if s.mfu is not None else ""
        print(f"paraplan: {setup.plan.short()} on {s.world_size} x {s.device}: {s.steps} steps, "
              f"{s.step_time_s * 1e3:.1f} ms/step, {s.tokens_per_s:.0f} tokens/s{mfu}; "
              f"results in {result.out_dir}")
        if s.validation:
            v = s.validation[-1]
            text = f", BLEU {v.bleu:.1f}, ROUGE-1/2/L {v.rouge1:.1f}/{v.rouge2:.1f}/{v.rouge_l:.1f}" \
                if v.bleu is not None else ""
            print(f"paraplan: validation at step {v.step}: loss {v.loss:.4f}, perplexity {v.perplexity:.2f}{text}")
    return 0


# ---- launch (executor): a plan on a cluster (torchrun, Slurm, Kubernetes, Ray)
LAUNCH_TARGETS = ["torchrun", "slurm", "kubernetes", "ray"]  # executor.launch.TARGETS (kept light: no torch here)


def _add_launch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("launch", help="write (and --submit) what a cluster needs to run a plan: a torchrun "
                                      "script, an sbatch script, a Kubernetes manifest or a Ray Train driver")
    p.add_argument("plan_file", nargs="?", metavar="PLAN.json", help="plan file (e.g. from `paraplan plan --save`)")
    p.add_argument("--on", choices=LAUNCH_TARGETS, help="where to run it")
    p.add_argument("--status", metavar="JOBID", default=None, help="print a Slurm job's state (squeue/sacct)")
    p.add_argument("--nodes", type=int, default=None, help="nodes (default: what the plan fills)")
    p.add_argument("--gpus-per-node", type=int, default=None, help="default: the cluster preset's")
    p.add_argument("--cluster", default="dgx-a100", help="cluster preset: GPUs per node, GPU type, network "
                                                        "(NCCL settings); 'cpu' runs CPU workers over Gloo")
    p.add_argument("--model", default="tiny-llama", help="catalog name or ModelSpec YAML/JSON")
    p.add_argument("--steps", type=int, default=50, help="train until this optimizer step")
    p.add_argument("--out", default=None, help="run directory as the nodes see it (default runs/NAME; "
                                               "/runs/NAME on Kubernetes)")
    p.add_argument("--global-batch", type=int, default=None,
                   help="sequences per step (default: 8 per GPU as in `plan`; 8 with --cluster cpu)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="default: the model's context (at most 1024 with --cluster cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4)")
    p.add_argument("--warmup-steps", type=int, default=None, help="default lr-decay-steps // 10")
    p.add_argument("--lr-decay-steps", type=int, default=None, help="cosine length (default --steps)")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16", "fp8"],
                   help="default bf16 on GPUs, fp32 on CPUs; fp8 (torchao float8 linears) needs compute capability >= 8.9")
    p.add_argument("--ckpt-every", type=int, default=100, help="checkpoint every N steps and at the end")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="restarts after a failure, each from the newest checkpoint")
    p.add_argument("--timeout", type=float, default=1800.0, help="collective timeout in seconds")
    p.add_argument("--log-every", type=int, default=10, help="progress line every N steps")
    p.add_argument("--eval-every", type=int, default=10,
                   help="validation loss/perplexity on the held-out split every N steps and at the end")
    p.add_argument("--eval-batches", type=int, default=2, help="validation batches per evaluation")
    p.add_argument("--name", default=None, help="job name (default paraplan-MODEL-PLAN)")
    p.add_argument("--env", action="append", default=None, metavar="NAME=VALUE",
                   help="extra environment for the workers (repeatable), e.g. NCCL_SOCKET_IFNAME=ib0")
    p.add_argument("--python", default=None, help="interpreter on the nodes (default: this one; python in a container)")
    p.add_argument("--rdzv-host", default=None, help="torchrun: the node that hosts the rendezvous (node 0)")
    p.add_argument("--rdzv-port", type=int, default=29500, help="torchrun: the rendezvous port on node 0")
    p.add_argument("--partition", default=None, help="Slurm partition")
    p.add_argument("--account", default=None, help="Slurm account")
    p.add_argument("--time", default=None, dest="time_limit", help="Slurm time limit, e.g. 24:00:00")
    p.add_argument("--image", default="paraplan:latest", help="Kubernetes: container image with paraplan installed")
    p.add_argument("--namespace", default=None, help="Kubernetes namespace")
    p.add_argument("--pvc", default=None, help="Kubernetes: PersistentVolumeClaim for the run directory")
    p.add_argument("--kind", default="pytorchjob", choices=["pytorchjob", "jobset"], help="Kubernetes object")
    p.add_argument("--ray-address", default=None, help="Ray cluster (default: a local instance)")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: world size)")
    p.add_argument("--file", default=None, help="where to write the script or manifest (default: NAME.<ext>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --file")
    p.add_argument("--submit", action="store_true",
                   help="also submit it: sbatch, kubectl apply, Ray Train from here, or this node's torchrun")
    p.set_defaults(handler=_cmd_launch)


def _cmd_launch(args: argparse.Namespace) -> int:
    from executor.launch import (
        RunFailed,
        check_submit,
        job_status,
        launch_note,
        prepare_launch,
        submit_launch,
        write_launch,
    )

    if args.status is not None:
        info = job_status(args.status)
        extra = info.get("reason") or info.get("exit_code") or ""
        print(f"job {info['job']}: {info['state']}, elapsed {info['elapsed']}, nodes {info['nodes'] or '-'}"
              + (f", {extra}" if extra and extra != "None" else "") + f" ({info['source']})")
        return 0
    if not args.plan_file or not args.on:
        raise ValueError("launch: give PLAN.json and --on torchrun|slurm|kubernetes|ray (or --status JOBID)")
    spec = prepare_launch(
        args.plan_file, on=args.on, model=args.model, steps=args.steps, out=args.out, nodes=args.nodes,
        gpus_per_node=args.gpus_per_node, cluster=args.cluster, global_batch=args.global_batch, seq_len=args.seq_len,
        seed=args.seed, lr=args.lr, warmup_steps=args.warmup_steps, lr_decay_steps=args.lr_decay_steps,
        dtype=args.dtype, ckpt_every=args.ckpt_every, max_restarts=args.max_restarts, timeout_s=args.timeout,
        log_every=args.log_every, eval_every=args.eval_every, eval_batches=args.eval_batches, name=args.name,
        rdzv_host=args.rdzv_host, rdzv_port=args.rdzv_port, env=args.env,
        python=args.python, partition=args.partition, account=args.account, time_limit=args.time_limit,
        image=args.image, namespace=args.namespace, pvc=args.pvc, ray_address=args.ray_address)
    if args.submit:
        check_submit(spec)  # before writing: a refused submission leaves nothing behind
    path = write_launch(spec, args.file, kind=args.kind, overwrite=args.overwrite)
    print(f"paraplan: wrote {path}: {spec.summary_line()}", file=sys.stderr)
    if note := launch_note(spec):
        print(f"paraplan: note: {note}", file=sys.stderr)
    if not args.submit:
        usage = {"slurm": f"sbatch {path}", "kubernetes": f"kubectl apply -f {path}",
                 "ray": f"python {path} --address auto", "torchrun": f"bash {path}  # on each of the {spec.nodes} nodes"}
        print(usage[spec.target])
        return 0
    try:
        result = submit_launch(spec, path, num_cpus=args.ray_cpus)
    except (RunFailed, RuntimeError) as exc:
        print(f"paraplan: error: run failed: {exc}", file=sys.stderr)
        return 1
    if "job" in result:
        print(f"paraplan: submitted Slurm job {result['job']}; follow it with: paraplan launch --status "
              f"{result['job']}", file=sys.stderr)
        print(result["job"])
    elif "applied" in result:
        print(result["applied"])
    elif result.get("summary"):
        s = result["summary"]
        print(f"paraplan: {spec.plan.short()} on Ray ({s['world_size']} workers): {s['steps']} steps, "
              f"{s['step_time_s'] * 1e3:.1f} ms/step; results in {spec.out_dir}")
    return 0


# ---------------------------------------------------------------- profile (owned by costmodel/profile)
def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure this machine (GEMMs, attention, memory, collectives) "
                                       "and write a calibration profile")
    p.add_argument("--out", type=output_file, default="profile.json", help="CalibrationProfile JSON to write (atomically)")
    p.add_argument("--model", default="gpt3-125m", help="model whose layer GEMM shapes are measured")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", action="append", default=None, help="dtype(s) to measure (repeatable)")
    p.add_argument("--nprocs", default="auto",
                   help="local processes for collectives, e.g. 2 or 2,4 (0 = skip; auto: 2 on CPU, every GPU when "
                        "there are several, none on one GPU)")
    p.add_argument("--sizes", default="1KB-64MB",
                   help="collective buffer sizes: a range LO-HI (powers of 4) or a list 1KB,1MB (KB = 1024 B)")
    p.add_argument("--ops", default=None, help="collectives to time, comma-separated (default: all)")
    p.add_argument("--tokens", type=positive_int, default=None, help="GEMM rows (tokens) per layer GEMM")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads for the compute kernels (default: torch's)")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--timeout", type=positive_float, default=120.0, help="seconds before a collective run is ended")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.set_defaults(handler=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    from costmodel.calibration.profile import ProfileConfig, run_profile
    from costmodel.calibration.profile.options import parse_nprocs, parse_ops, parse_sizes
    from costmodel.calibration.profile_spec import save_profile

    nprocs = None if args.nprocs == "auto" else parse_nprocs(args.nprocs)
    cfg = ProfileConfig(model=args.model, device=args.device, dtypes=tuple(args.dtype) if args.dtype else None,
                        tokens=args.tokens, threads=args.threads, nprocs=nprocs, sizes_bytes=parse_sizes(args.sizes),
                        ops=parse_ops(args.ops), repeats=args.repeats, seed=args.seed,
                        timeout_s=args.timeout, progress=args.progress)
    profile = run_profile(cfg)
    save_profile(profile, args.out)
    print(f"wrote {args.out}: {profile.device}, torch {profile.torch_version}, {len(profile.gemm)} GEMMs, "
          f"{len(profile.attention)} attention, {len(profile.mem_ops)} memory-bound operator, "
          f"{len(profile.optimizer)} optimizer, {len(profile.collectives)} collective points")
    return 0


# ---------------------------------------------------------------- validate, calibrate (closed loop)
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="run feasible plans for real on this machine and compare with predictions")
    p.add_argument("--local", action="store_true", required=True, help="validate on this machine (required)")
    p.add_argument("--model", default="small-llama", help="small catalog model to run (default small-llama)")
    p.add_argument("--procs", type=positive_int, default=4, help="processes (Gloo on CPU; GPUs when present)")
    p.add_argument("--max-plans", type=positive_int, default=10, help="plans to run (planner's top 3 + a spread)")
    p.add_argument("--steps", type=positive_int, default=4, help="optimizer steps per run (the first is warm-up)")
    p.add_argument("--repeats", type=positive_int, default=1, help="runs per plan (min-max shows machine noise)")
    p.add_argument("--global-batch", type=positive_int, default=8)
    p.add_argument("--seq-len", type=positive_int, default=128,
                   help="sequence length (default 128: a 10-plan sweep of small-llama stays within 15 min on 2 cores)")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="CalibrationProfile of this machine (default: measure one into OUT/profile.json)")
    p.add_argument("--no-cv", action="store_true", help="skip the leave-one-out calibrated predictions")
    p.add_argument("--out", default="runs/validate-local", help="folder for validation.csv, summary.json, runs/")
    p.add_argument("--doc", type=output_file, default=None, metavar="VALIDATION.md", help="also write the report section here")
    p.set_defaults(handler=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    import functools
    import shlex
    from pathlib import Path

    from costmodel.calibration.fit_data import local_cluster
    from costmodel.calibration.profile_spec import load_profile, save_profile
    from executor.launch import run_plan
    from planner.closed_loop.doc import local_markdown, update_part
    from planner.closed_loop.validate import LocalValidation, run_local_validation

    out = Path(args.out)
    model = load_model(args.model)
    cfg = LocalValidation(model=model, procs=args.procs, max_plans=args.max_plans, steps=args.steps,
                          repeats=args.repeats, global_batch=args.global_batch, seq_len=args.seq_len, cv=not args.no_cv)
    cfg.check()
    if args.profile:
        profile = load_profile(args.profile)
    else:
        from costmodel.calibration.profile import ProfileConfig, run_profile

        print(f"paraplan: profiling this machine for {model.name} (pass --profile to reuse one)", file=sys.stderr)
        profile = run_profile(ProfileConfig(model=model.name, nprocs=(args.procs,) if args.procs > 1 else (),
                                            sizes_bytes=tuple(1024 * 4**i for i in range(7)), repeats=3,
                                            progress=False))
        save_profile(profile, out / "profile.json")
    cluster = local_cluster(args.procs)
    if profile.device.lower() != "cpu":  # GPUs: the preset of this GPU, one node of --procs GPUs
        from costmodel.calibration.fit_data import cluster_for_device

        cluster = cluster_for_device(profile.device, args.procs).model_copy(update={"gpus_per_node": args.procs})
    # the sweep's run directories are its own outputs: a new sweep into --out replaces them; the plans
    # are those the executor runs on this device (costmodel.step.runnable)
    report = run_local_validation(cfg, runner=functools.partial(run_plan, overwrite=True), cluster=cluster,
                                  profile=profile,
                                  out_dir=out, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    s = report.summary
    print(f"validate --local: {s['plans_run']} plans run ({s['plans_failed']} failed); step time mean |error| "
          f"{s['step_time_mean_abs_error']:.1%} (max {s['step_time_max_abs_error']:.1%}), Spearman {s['spearman']:.3f}, "
          f"regret {s['regret']:.3f}; calibrated (leave-one-out): mean |error| "
          f"{s.get('cv_step_time_mean_abs_error', float('nan')):.1%}, Spearman {s.get('cv_spearman', float('nan')):.3f}; "
          f"peak memory mean |error| {s['peak_mean_abs_error']:.1%}; wrote {out / 'validation.csv'}")
    if args.doc:
        csv_doc = Path(args.doc).with_name("validation_local.csv")
        csv_doc.write_text((out / "validation.csv").read_text())
        command = (f"paraplan validate --local --model {args.model} --procs {args.procs} --max-plans {args.max_plans} "
                   f"--steps {args.steps} --repeats {args.repeats} --global-batch {args.global_batch}"
                   + (f" --seq-len {args.seq_len}" if args.seq_len else "")
                   + (f" --profile {shlex.quote(args.profile)}" if args.profile else "") + f" --out {shlex.quote(str(out))}")
        update_part(args.doc, "local", local_markdown(report.rows, s, command=command, csv_name=csv_doc.name))
    return 0 if s["plans_run"] else 1


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit the cost model's constants to measured runs (held-out scoring)")
    p.add_argument("summaries", nargs="*", metavar="SUMMARY.json", help="executor summary.json files or run folders")
    p.add_argument("--vtrain", action="store_true", help="fit on the vTrain A100 measurements (shipped with paraplan; see docs/VALIDATION.md)")
    p.add_argument("--data", default=None, help="folder holding vtrain/ (default: the copy shipped with paraplan)")
    p.add_argument("--profile", default=None, metavar="FILE", help="measured profile of the runs' machine to build on")
    p.add_argument("--fit", default=None, metavar="NAMES", help="comma-separated constants to fit (default: by data)")
    p.add_argument("--holdout", type=fraction, default=0.3, help="fraction held out for scoring (default 0.3)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--max-evals", type=positive_int, default=200, help="cost-model evaluations of the fit set per try")
    p.add_argument("--out", type=output_file, default="calib.json",
                   help="calibration profile to write (estimate/search calibration=)")
    p.add_argument("--csv", type=output_file, default=None, metavar="FILE", help="per-run predictions before/after as CSV")
    p.add_argument("--doc", type=output_file, default=None, metavar="VALIDATION.md", help="also write the report section here")
    p.set_defaults(handler=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from costmodel.calibration.calibrate import VTRAIN_FIT_NAMES, calibrate
    from costmodel.calibration.fit_data import observations_from_summaries, vtrain_observations
    from costmodel.calibration.profile_spec import load_profile, save_profile
    from costmodel.calibration.published.validate import VALIDATION_EFFICIENCY
    from costmodel.step.report import write_text_atomic
    from planner.closed_loop.doc import fit_markdown, update_part

    if bool(args.summaries) == bool(args.vtrain):
        raise ValueError("calibrate: give summary.json files or --vtrain (one of the two)")
    names = tuple(n.strip() for n in args.fit.split(",") if n.strip()) if args.fit else None
    profile = load_profile(args.profile) if args.profile else None
    if args.vtrain:
        obs = vtrain_observations(args.data)
        if not obs:
            print(f"paraplan: --data: no vtrain/ground_truth_*.csv in {args.data}; point it at a folder with vtrain/ "
                  "or leave it out", file=sys.stderr)
            return 2
        fit, saved = calibrate(obs, profile=profile, names=names or VTRAIN_FIT_NAMES, efficiency=VALIDATION_EFFICIENCY,
                               test_fraction=args.holdout, seed=args.seed, max_evals=args.max_evals, source="vtrain")
    else:
        obs = observations_from_summaries(args.summaries)
        if profile is not None and profile.device.lower() == "cpu" and obs:
            from planner.closed_loop.validate import host_constants

            # the same a-priori host constants as validate --local
            start = host_constants(profile, procs=obs[0].plan.world_size)
            profile = profile.model_copy(update={"constants": {**start, **profile.constants}})
        fit, saved = calibrate(obs, profile=profile, names=names, test_fraction=args.holdout, seed=args.seed,
                               max_evals=args.max_evals, source="summaries")
    save_profile(saved, args.out)
    if args.csv:
        write_text_atomic(args.csv, fit.rows.to_csv(index=False))
    print(f"calibrate: {len(obs)} runs, fitted {', '.join(fit.names)}\n"
          f"  fit part:      before {fit.before_fit.text()}\n  fit part:      after  {fit.after_fit.text()}\n"
          f"  held-out part: before {fit.before_test.text()}\n  held-out part: after  {fit.after_test.text()}\n"
          f"wrote {args.out}")
    if args.doc:
        title = "Calibration on vTrain (A100, Megatron-DeepSpeed)" if args.vtrain else "Calibration on our runs"
        cmd = ("paraplan calibrate " + ("--vtrain" if args.vtrain else " ".join(args.summaries))
               + f" --holdout {args.holdout} --seed {args.seed} --max-evals {args.max_evals} --out {args.out}")
        update_part(args.doc, "calibrate-vtrain" if args.vtrain else "calibrate-runs",
                    fit_markdown(title, fit, command=cmd, constants=saved.constants))
    return 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_estimate, _add_validate_published, _add_ui, _add_plan, _add_sweep, _add_run, _add_launch, _add_profile, _add_validate, _add_calibrate]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="paraplan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or 0)
    except ValidationError as exc:
        print(f"paraplan: error: {format_validation_error(exc)}", file=sys.stderr)
    except (ValueError, CliUsageError) as exc:
        print(f"paraplan: error: {exc}", file=sys.stderr)
    except BrokenPipeError:   # e.g. `paraplan plan ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        print(f"paraplan: error: {_os_error(exc)}", file=sys.stderr)
    except MemoryError:
        print("paraplan: error: out of memory; ask for a smaller model, cluster or batch (docs/LIMITS.md)",
              file=sys.stderr)
    except KeyboardInterrupt:
        print("paraplan: interrupted", file=sys.stderr)
        return 130
    return 2


def _os_error(exc: OSError) -> str:
    """'FILE: reason' with a long file name cut short."""
    name = exc.filename
    if name is None:
        return str(exc)
    name = str(name)
    name = name if len(name) <= 60 else name[:57] + "..."
    return f"{name!r}: {exc.strerror or exc}"


if __name__ == "__main__":
    sys.exit(main())
