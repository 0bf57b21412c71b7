"""A local run of a plan: the `paraplan run` command line, and its measurement next to the cost
model's prediction of the same run (same model, plan, batch and this machine's cluster preset)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from costmodel import ParallelPlan, Rejection, StepEstimate, StepMeasurement, TrainingSpec, load_model
from ui import services
from ui.charts import GIB
from ui.jobs import paraplan_argv

__all__ = ["LOCAL_MODELS", "default_procs", "compile_default", "run_argv", "check_run", "compare", "comparison_rows",
           "comparison_table"]

LOCAL_MODELS = ["tiny-llama", "tiny-gpt", "tiny-bert", "small-llama"]
"""Catalog models small enough to train on this machine's CPUs in seconds."""


def default_procs() -> int:
    """Processes for a local run: 2 on a small host, up to 4."""
    return max(1, min(4, os.cpu_count() or 1))


def compile_default() -> bool:
    """The Run page's compile toggle starts where `paraplan run` would: on with a CUDA device here, off
    on CPUs (executor.compile.default_compile)."""
    import torch

    return torch.cuda.is_available()


def run_argv(plan_path: str | Path, *, model: str, steps: int, procs: int, global_batch: int,
             out: str | Path, compile: bool | None = None) -> list[str]:
    """`paraplan run PLAN --model M --steps N --out DIR` plus the options this build supports
    (`--scale-to`, `--global-batch`, `--compile/--no-compile` when `compile` is given)."""
    argv = paraplan_argv("run", str(plan_path), "--model", model, "--steps", str(steps), "--out", str(out))
    options = services.cli_options("run")
    if "--scale-to" in options:
        argv += ["--scale-to", str(procs)]
    if "--global-batch" in options:
        argv += ["--global-batch", str(global_batch)]
    if compile is not None and "--compile" in options:
        argv.append("--compile" if compile else "--no-compile")
    return argv


def check_run(plan: ParallelPlan, *, model: str, steps: int, procs: int, global_batch: int,
              out: str | Path) -> tuple[str, ...]:
    """`executor.prepare_run`'s checks for the run `run_argv` starts (ValueError naming the field);
    returns what scaling the plan to `procs` processes changed."""
    from executor import prepare_run

    setup = prepare_run(plan, model=model, steps=steps, out=out, global_batch=global_batch,
                        scale_to=procs)
    return tuple(setup.changes)


def compare(summary: dict[str, Any], *, calibration: Any = None) -> tuple[StepMeasurement, StepEstimate]:
    """The run's `summary.json` as a StepMeasurement, and the cost model's prediction of the same run
    (same model, plan and batch, on the cluster preset of the device it ran on; CPU runs are fp32; a CPU
    profile's host terms for the run's processes, `costmodel.calibration.host_terms.with_host_terms`)."""
    from costmodel import estimate
    from costmodel.calibration.fit_data import cluster_for_device
    from costmodel.calibration.host_terms import with_host_terms

    measured = StepMeasurement.model_validate(summary)
    cluster = cluster_for_device(measured.device, measured.world_size)
    cpu = measured.device == "cpu"
    training = TrainingSpec(global_batch_size=measured.global_batch_size, seq_len=measured.seq_len,
                            dtype="fp32" if cpu else "bf16", stack="megatron" if cpu else "paraplan")
    calibration = with_host_terms(calibration, procs=measured.world_size)
    return measured, estimate(load_model(measured.model), cluster, training, measured.plan, calibration=calibration)


def comparison_rows(measured: StepMeasurement, predicted: StepEstimate | Rejection) -> list[dict[str, Any]]:
    """Long rows (metric, source, value) for the grouped bar chart."""
    rows = [{"metric": "step time (s)", "source": "measured", "value": measured.step_time_s},
            {"metric": "tokens/s", "source": "measured", "value": measured.tokens_per_s},
            {"metric": "peak memory (GiB)", "source": "measured", "value": measured.peak_bytes / GIB}]
    if isinstance(predicted, StepEstimate):
        rows += [{"metric": "step time (s)", "source": "predicted", "value": predicted.step_time_s},
                 {"metric": "tokens/s", "source": "predicted", "value": predicted.tokens_per_s},
                 {"metric": "peak memory (GiB)", "source": "predicted", "value": predicted.memory.peak_bytes / GIB}]
    return rows


def comparison_table(measured: StepMeasurement, predicted: StepEstimate | Rejection) -> pd.DataFrame:
    """One row per metric: measured, predicted and the relative error (predicted / measured - 1)."""
    df = pd.DataFrame(comparison_rows(measured, predicted)).pivot(index="metric", columns="source", values="value")
    if "predicted" in df:
        df["error"] = df["predicted"] / df["measured"] - 1.0
    return df.reset_index()
