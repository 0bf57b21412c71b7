"""The `paraplan` command: a thin dispatcher whose subcommands call each package's public API.

Bad input ends with a one-line `paraplan: error: ...` naming the field, and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

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

__all__ = ["main", "build_parser"]

Handler = Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------- shared arguments and spec builders
def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gpt3-175b", help="catalog name, ModelSpec YAML/JSON, or HF config.json")


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", default="dgx-a100", help="cluster preset or ClusterSpec YAML/JSON file")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes")
    p.add_argument("--gpu", default=None, help="swap the preset's GPU type (e.g. h100-sxm)")


def add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--global-batch", type=int, default=None, help="sequences per step (default: 8 per GPU)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: model's max)")
    p.add_argument("--dtype", default="bf16", choices=["fp32", "tf32", "bf16", "fp16", "fp8"])


def add_plan_args(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Plan knobs. With defaults=False every knob defaults to None (= free, for the planner)."""
    d = (lambda v: v) if defaults else (lambda v: None)
    p.add_argument("--plan", default=None, help="a plan JSON file (knobs given on the line override it)")
    p.add_argument("--dp", type=int, default=None)
    p.add_argument("--tp", type=int, default=d(1))
    p.add_argument("--pp", type=int, default=d(1))
    p.add_argument("--cp", type=int, default=d(1))
    p.add_argument("--micro-batch", type=int, default=d(1))
    p.add_argument("--virtual-stages", type=int, default=d(1))
    p.add_argument("--schedule", default=d(None), choices=["gpipe", "1f1b", "interleaved-1f1b", "zero-bubble"])
    p.add_argument("--zero", type=int, default=d(0), choices=[0, 1, 2, 3], help="ZeRO stage")
    p.add_argument("--recompute", default=d("none"), choices=["none", "selective", "full"])
    p.add_argument("--sequence-parallel", action=argparse.BooleanOptionalAction, default=d(False))


def build_specs(args: argparse.Namespace) -> tuple[ModelSpec, ClusterSpec, TrainingSpec]:
    model = load_model(args.model)
    cluster = get_cluster(args.cluster, nodes=args.nodes, gpu=args.gpu)
    seq_len = args.seq_len or model.max_seq_len
    global_batch = args.global_batch or 8 * cluster.num_gpus
    training = TrainingSpec(global_batch_size=global_batch, seq_len=seq_len, dtype=args.dtype)
    return model, cluster, training


_PLAN_FIELDS = {"dp": "dp", "tp": "tp", "pp": "pp", "cp": "cp", "micro_batch": "micro_batch_size",
                "virtual_stages": "virtual_stages", "schedule": "schedule", "zero": "zero_stage",
                "recompute": "recompute", "sequence_parallel": "sequence_parallel"}


def plan_from_args(args: argparse.Namespace, *, world_size: int | None = None) -> ParallelPlan:
    """A ParallelPlan from `--plan FILE` and/or the knob flags; dp defaults to fill `world_size`."""
    base = load_plan(args.plan).model_dump() if args.plan else {}
    for arg, field in _PLAN_FIELDS.items():
        value = getattr(args, arg, None)
        if value is not None:
            base[field] = value
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
    p.add_argument("--json", action="store_true", help="print the StepEstimate as JSON")
    p.add_argument("--timeline", default=None, metavar="TRACE.json", help="write a Chrome/Perfetto trace")
    p.set_defaults(handler=_cmd_estimate)


def _cmd_estimate(args: argparse.Namespace) -> int:
    raise NotImplementedError("estimate: being built (costmodel)")


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_estimate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paraplan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ValidationError as exc:
        print(f"paraplan: error: {format_validation_error(exc)}", file=sys.stderr)
    except (ValueError, FileNotFoundError) as exc:
        print(f"paraplan: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("paraplan: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
