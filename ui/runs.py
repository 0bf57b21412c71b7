"""Runs the app starts and keeps: the runs folder, the `paraplan` commands of a run, and its prediction.

Runs live in one folder (`$PARAPLAN_RUNS`, `paraplan ui --runs DIR`, default `./runs`), one directory
per run named by start time, model and plan, never reused (a run never overwrites another). Each holds
what `paraplan run` writes (plan.json, metrics.jsonl, summary.json, memory.json, trace/) plus
`request.json`, what the app asked for. Deleting a run removes its directory.

The prediction beside a run is the one `paraplan validate --local` makes (planner's closed loop): this
machine's profile, measured with validate's own settings (`profile_argv`) once per model and process
count and kept in `<runs>/profiles/`, its a-priori host constants, and `LocalPredictor` (the work-span
bound when more workers than cores) for the plan, model and batch that actually ran."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from costmodel import ParallelPlan, StepEstimate, StepMeasurement, TrainingSpec, load_model
from costmodel.atomic import write_text_atomic
from ui.charts import GIB
from ui.jobs import paraplan_argv

__all__ = ["LOCAL_MODELS", "RUNS_ENV", "default_procs", "compile_default", "runs_root", "profile_path", "profile_argv", "run_argv",
           "job_argv", "check_run", "new_run_dir", "write_request", "RunInfo", "list_runs", "delete_run",
           "LocalPrediction", "predict", "comparison_table", "TRACE_STEP_LAST"]

LOCAL_MODELS = ["tiny-llama", "tiny-gpt", "tiny-bert", "tiny-t5", "small-llama"]
"""Catalog models small enough to train on this machine's CPUs in seconds."""
RUNS_ENV = "PARAPLAN_RUNS"
REQUEST = "request.json"
RESERVED = ("profiles", "validations")
"""Folders of the runs folder that are not runs: this machine's profiles, the Calibrate page's validations."""
TRACE_STEP_LAST = -1
"""`run_argv(trace_step=TRACE_STEP_LAST)`: profile the last step (steady state; left out of the median)."""


def default_procs() -> int:
    """Processes for a local run: 2 on a small host, up to 4."""
    return max(1, min(4, os.cpu_count() or 1))


def runs_root() -> Path:
    """The runs folder: `$PARAPLAN_RUNS`, else ./runs (created on first use)."""
    return Path(os.environ.get(RUNS_ENV) or "runs").resolve()


def profile_path(root: Path, model: str, procs: int) -> Path:
    """Where this machine's profile for `model` with `procs` processes is kept."""
    return root / "profiles" / f"{model}-{procs}p.json"


def profile_argv(path: Path, *, model: str, procs: int) -> list[str]:
    """`paraplan profile` with the settings `paraplan validate --local` measures its profile with
    (collectives over `procs` processes, buffers 1 KiB-4 MiB, 3 repeats)."""
    return paraplan_argv("profile", "--out", str(path), "--model", model, "--nprocs", str(procs if procs > 1 else 0),
                         "--sizes", "1KB-4MB", "--repeats", "3", "--no-progress")


def compile_default() -> bool:
    """The Run page's compile toggle starts where `paraplan run` would: on with a CUDA device here, off
    on CPUs (executor.compile.default_compile)."""
    import torch

    return torch.cuda.is_available()


def run_argv(plan_path: str | Path, *, model: str, steps: int, procs: int, global_batch: int,
             out: str | Path, seq_len: int | None = None, trace_step: int = 0, compile: bool | None = None) -> list[str]:
    """`paraplan run PLAN --model M --steps N --scale-to P --global-batch B --out DIR` (+ sequence length,
    a profiled step: `TRACE_STEP_LAST` = the last one, and `--compile/--no-compile` when `compile` is given)."""
    argv = paraplan_argv("run", str(plan_path), "--model", model, "--steps", str(steps), "--out", str(out),
                         "--scale-to", str(procs), "--global-batch", str(global_batch), "--log-every", "1")
    if seq_len:
        argv += ["--seq-len", str(seq_len)]
    if trace_step:
        argv += ["--trace-step", str(steps if trace_step == TRACE_STEP_LAST else trace_step)]
    if compile is not None:
        argv.append("--compile" if compile else "--no-compile")
    return argv


def job_argv(*commands: list[str]) -> list[str]:
    """One job running `commands` in order, stopping at the first failure (a POSIX shell `&&` chain)."""
    if len(commands) == 1:
        return commands[0]
    return ["/bin/sh", "-c", " && ".join(shlex.join(c) for c in commands)]


def check_run(plan: ParallelPlan, *, model: str, steps: int, procs: int, global_batch: int,
              out: str | Path, seq_len: int | None = None) -> tuple[str, ...]:
    """`executor.prepare_run`'s checks for the run `run_argv` starts (ValueError naming the field);
    returns what scaling the plan to `procs` processes changed."""
    from executor import prepare_run

    setup = prepare_run(plan, model=model, steps=steps, out=out, global_batch=global_batch, seq_len=seq_len,
                        scale_to=procs)
    return tuple(setup.changes)


def new_run_dir(root: Path, *, model: str, plan: ParallelPlan) -> Path:
    """A fresh directory for one run: `<time>-<model>-<plan>`, with -2, -3, ... if that exists."""
    root.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{plan.short()}"
    for i in range(1, 1000):
        path = root / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise ValueError(f"runs folder {root}: too many runs named {base}; delete some")


def write_request(run_dir: Path, request: dict[str, Any]) -> Path:
    """What the app asked for (model, steps, processes, batch, plan, where it came from), atomically."""
    return write_text_atomic(run_dir / REQUEST, json.dumps({**request, "started_unix": time.time()}, indent=2))


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class RunInfo:
    """One run of the runs folder."""

    path: Path
    request: dict[str, Any]
    summary: StepMeasurement | None
    failed: bool

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        if self.summary is not None:
            return "finished"
        return "failed" if self.failed else "incomplete"

    def row(self) -> dict[str, Any]:
        s, r = self.summary, self.request
        return {"run": self.name, "status": self.status, "model": r.get("model", s.model if s else ""),
                "plan": s.plan.short() if s else r.get("plan_label", ""), "processes": s.world_size if s else
                r.get("procs"), "step_time_s": s.step_time_s if s else math.nan,
                "tokens_per_s": round(s.tokens_per_s) if s else math.nan, "source": r.get("source", "")}


def list_runs(root: Path) -> list[RunInfo]:
    """Runs in the folder, newest first (directories holding request.json or summary.json)."""
    if not root.is_dir():
        return []
    out = []
    for path in root.iterdir():
        if not path.is_dir() or path.name in RESERVED:
            continue
        request = _json(path / REQUEST)
        raw = _json(path / "summary.json")
        if request is None and raw is None:
            continue
        try:
            summary = StepMeasurement.model_validate(raw) if raw is not None else None
        except ValueError:
            summary = None
        failed = (path / "failures").is_dir() or "exit status" in _tail(path / "job.log")
        out.append(RunInfo(path, request or {}, summary, failed and summary is None))
    return sorted(out, key=lambda r: (r.request.get("started_unix", 0.0), r.name), reverse=True)


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def delete_run(root: Path, name: str) -> None:
    """Remove run `name` from the runs folder (ValueError for anything that is not one of its runs)."""
    path = (root / name).resolve()
    if path.parent != root.resolve() or not path.is_dir() or name in RESERVED or not (
            (path / REQUEST).is_file() or (path / "summary.json").is_file()):
        raise ValueError(f"run {name!r}: not a run of {root}")
    shutil.rmtree(path)


@dataclass(frozen=True)
class LocalPrediction:
    """The closed loop's prediction of a finished run: step time (work-span bound when it applies) and the
    estimate of the executor's stack (`paraplan`: breakdown, simulated timeline, memory, whose
    `allocated_bytes` are the live tensor bytes validate compares)."""

    step_time_s: float
    estimate: StepEstimate
    profile: Path


def predict(run_dir: Path, profile: Path) -> tuple[StepMeasurement, LocalPrediction]:
    """The run's measurement and `paraplan validate --local`'s prediction of it (ValueError when the run
    or the profile cannot be read)."""
    from costmodel import estimate
    from costmodel.calibration import load_profile
    from costmodel.calibration.fit_data import cluster_for_device, local_cluster
    from planner.closed_loop.host import LocalPredictor

    raw = _json(run_dir / "summary.json")
    if raw is None:
        raise ValueError(f"run {run_dir.name}: no summary.json (the run did not finish)")
    measured = StepMeasurement.model_validate(raw)
    if not profile.is_file():
        raise ValueError(f"profile {profile} is missing; start the run again to measure it")
    prof = load_profile(profile)
    cpu = measured.device.lower() == "cpu"
    cluster = local_cluster(measured.world_size) if cpu else cluster_for_device(
        measured.device, measured.world_size).model_copy(update={"gpus_per_node": measured.world_size})
    training = TrainingSpec(global_batch_size=measured.global_batch_size, seq_len=measured.seq_len,
                            dtype="fp32" if cpu else "bf16")
    model = load_model(measured.model)
    predictor = LocalPredictor(prof, model=model, cluster=cluster, training=training, procs=measured.world_size)
    step_s, _ = predictor(measured.plan)
    est = estimate(model, cluster, predictor.training, measured.plan, calibration=predictor.calibration,
                   timeline=True)
    return measured, LocalPrediction(step_s, est, profile)


def comparison_table(measured: StepMeasurement, predicted: LocalPrediction, *,
                     tensor_peak_bytes: float | None = None) -> pd.DataFrame:
    """One row per figure: measured, predicted, unit and the error in % (predicted / measured - 1). Memory
    is compared with the peak of live tensor bytes when the run counted it (what the cost model
    predicts), else with the resident-set rise."""
    tokens = measured.global_batch_size * measured.seq_len
    mem_measured = tensor_peak_bytes or measured.peak_bytes
    mem_predicted = predicted.estimate.memory.allocated_bytes
    unit, scale = ("GiB", GIB) if max(mem_measured, mem_predicted) >= GIB else ("MiB", 2**20)
    rows = [("step time", "s", measured.step_time_s, predicted.step_time_s),
            ("tokens/s", "tokens/s", measured.tokens_per_s, tokens / predicted.step_time_s),
            ("peak memory" + (" (live tensors)" if tensor_peak_bytes else " (resident set)"), unit,
             mem_measured / scale, mem_predicted / scale)]
    df = pd.DataFrame(rows, columns=["metric", "unit", "measured", "predicted"])
    df["error_pct"] = (df["predicted"] / df["measured"] - 1.0) * 100.0
    return df
