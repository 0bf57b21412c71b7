"""`validate --local`: run feasible plans of a small model on this machine, predict each with the cost
model calibrated by this machine's profile, and compare (the closed loop).

1. `select_plans`: the planner's space for `procs` processes, the plans the executor runs on this
   device (`costmodel.step.runnable`), is ranked exactly by `planner.search`; we keep the planner's top
   plans, the best plan of each context-parallel degree, and plans evenly spaced over the rest of the
   ranking, so the sweep spans fast and slow plans and prices context parallelism too.
2. Each plan runs for `steps` optimizer steps through the injected `runner` (the CLI passes
   `executor.launch.run_plan`; this module never imports the executor, DESIGN.md) and its
   `StepMeasurement` (median step time after warm-up, peak memory over ranks) is read back.
3. Predictions use the profile with a-priori constants (`costmodel.calibration.host_terms.host_constants`):
   on a CPU host the measured eager host costs (per block, TP per token, the data-parallel wrapper,
   the optimizer per tensor and parameter) add to compute, and more workers than cores share them:
   the step is the work-span bound of the plan priced with a core per worker (`work_span_step_s`);
   memory is the executor's allocated tensor bytes as stack `paraplan` predicts them (`LocalPredictor.memory`).
4. Out-of-fold calibrated predictions (`costmodel.calibration.fit.cross_validated`): each plan predicted with
   constants fitted on the other plans' measurements - the error a user gets after `paraplan calibrate`.

Rows and summary go to `validation.csv` and `summary.json` (metrics in `planner.closed_loop.metrics`)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from costmodel import ClusterSpec, ModelSpec, ParallelPlan, StepMeasurement, TrainingSpec
from costmodel.calibration.fit import Observation, cross_validated, fit_constants
from costmodel.calibration.profile_spec import CalibrationProfile

from ..search import search
from .host import LocalPredictor, host_constants
from .metrics import summarize_validation
from .report import CSV_COLUMNS, PLAN_KNOBS, ValidationReport, cv_peak_bytes, per_repeat_summaries

__all__ = [
    "LocalValidation",
    "ValidationReport",
    "Runner",
    "host_constants",
    "select_plans",
    "run_local_validation",
    "LOCAL_FIT_NAMES",
    "CSV_COLUMNS",
]

Runner = Callable[..., Any]
"""`runner(plan, *, model, steps, out, global_batch, seq_len, dtype, stream)` -> object with `.summary`
(a StepMeasurement); raises on a failed run. `executor.launch.run_plan` has this signature."""

MEMORY_FILE = "memory.json"
"""The executor's per-run memory file (executor.train.MEMORY_FILENAME; this module never imports it)."""

LOCAL_FIT_NAMES = ("host_op_s", "step_overhead_s")
"""Constants fitted on local runs: what the profile does not measure (per-op host time, per-step
cost); compute rates and collectives come from the profile. Few constants for few runs: with 3 or 5
constants the leave-one-out error on 10 runs was worse (overfit; docs/VALIDATION.md)."""


@dataclass(frozen=True)
class LocalValidation:
    """What to sweep: model, processes, plans, steps per run, runs per plan, global batch, seq len."""

    model: ModelSpec
    procs: int = 4
    max_plans: int = 12
    steps: int = 4
    repeats: int = 1
    global_batch: int = 8
    seq_len: int | None = None
    top_plans: int = 3
    cv: bool = True

    def check(self) -> None:
        for name in ("procs", "max_plans", "steps", "repeats", "global_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.steps < 2:
            raise ValueError(f"steps={self.steps}: need >= 2 (the first step is warm-up and not timed)")
        from costmodel.calibration.profile.options import max_local_procs

        if self.procs > max_local_procs():
            raise ValueError(f"procs={self.procs}: exceeds the {max_local_procs()} processes this machine runs "
                             "(4 per CPU core)")
        if self.seq_len is not None and not 0 < self.seq_len <= self.model.max_seq_len:
            raise ValueError(
                f"seq_len={self.seq_len}: must be in 1..{self.model.max_seq_len} (max_seq_len of {self.model.name})"
            )


def select_plans(
    model: ModelSpec,
    cluster: ClusterSpec,
    training: TrainingSpec,
    *,
    calibration: Any,
    max_plans: int,
    top_plans: int = 3,
    runnable: Callable[[ParallelPlan], bool] | None = None,
    predictor: Callable[[ParallelPlan], tuple[float, Any]] | None = None,
) -> list[tuple[int, ParallelPlan]]:
    """(planner rank, plan) of up to `max_plans` feasible plans: the planner's `top_plans` best, the best
    of each context-parallel degree > 1, then evenly spaced over the rest of its exact ranking (distinct
    plan labels only). `runnable` drops plans the executor cannot run (default: the rules of
    `costmodel.step.runnable` on the cluster's device); `predictor` (e.g. `LocalPredictor`) re-ranks the
    search's plans by its step time - on a host with more workers than cores the planner's ranking is
    then the work-span bound's."""
    result = search(model, cluster, training, top_k=10_000, calibration=calibration, runnable_only=runnable is None)
    seen: dict[str, tuple[float, ParallelPlan]] = {}
    for rp in result.plans:
        key = rp.plan.short() + str(rp.plan.layers_per_stage)
        if key not in seen and (runnable is None or runnable(rp.plan)):
            seen[key] = (predictor(rp.plan)[0] if predictor else rp.rank, rp.plan)
    ranked = [(i + 1, plan) for i, (_, plan) in enumerate(sorted(seen.values(), key=lambda x: x[0]))]
    if not ranked:
        raise ValueError(
            f"no feasible plan for {model.name} on {cluster.num_gpus} processes: {result.message}"
        )
    head = ranked[: min(top_plans, max_plans)]
    for cp in sorted({plan.cp for _, plan in ranked} - {1}):   # the best plan of each CP degree
        best = next(item for item in ranked if item[1].cp == cp)
        if best not in head and len(head) < max_plans:
            head.append(best)
    rest = [item for item in ranked if item not in head]
    k = min(max_plans - len(head), len(rest))
    picks = [rest[int(round(i))] for i in np.linspace(0, len(rest) - 1, k)] if k > 0 else []
    return sorted(head + picks, key=lambda item: item[0])


def _speed_ratio(profile: CalibrationProfile, model: ModelSpec) -> float:
    """This CPU's speed right now relative to when `profile` measured it: the reference block's CPU
    seconds now (`costmodel.calibration.profile.host.speed_probe_s`) / `HostPoint.block_cpu_s` (> 1: slower now);
    NaN on GPUs or without that measurement."""
    host = profile.host
    if profile.device.lower() != "cpu" or host is None or not host.block_cpu_s or not host.concurrency_tokens:
        return math.nan
    from costmodel.calibration.profile.host import speed_probe_s

    return speed_probe_s(model, tokens=host.concurrency_tokens) / host.block_cpu_s


def _run_one(
    runner: Runner, plan: ParallelPlan, cfg: LocalValidation, training: TrainingSpec, run_dir: Path
) -> tuple[list[StepMeasurement], str, dict[str, float]]:
    measurements, status, cpu, load, tensor = [], "ok", [], [], []
    for r in range(cfg.repeats):
        out = run_dir if cfg.repeats == 1 else run_dir / f"repeat{r}"
        try:
            result = runner(
                plan,
                model=cfg.model,
                steps=cfg.steps,
                out=str(out),
                global_batch=training.global_batch_size,
                seq_len=training.seq_len,
                dtype=training.dtype,
                stream=None,
            )
        except Exception as exc:  # noqa: BLE001 - a failed plan is a row of the report, not the end of it
            status = f"failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
            continue
        summary = getattr(result, "summary", None)
        if summary is None or summary.step_time_s <= 0:
            status = "failed: the run wrote no summary.json"
            continue
        measurements.append(summary)
        records = list(getattr(result, "metrics", None) or [])[1:]  # the first step is warm-up
        cpu += [r["cpu_time_s"] for r in records if r.get("cpu_time_s") is not None]
        load += [r["load_avg_1m"] for r in records if r.get("load_avg_1m") is not None]
        tensor.append(_tensor_peak_bytes(Path(getattr(result, "out_dir", out))))
    host = {
        "measured_tensor_peak_bytes": float(np.nanmedian(tensor)) if any(t == t for t in tensor) else math.nan,
        "measured_cpu_s": float(np.median(cpu)) if cpu else math.nan,
        "load_avg_min": min(load) if load else math.nan,
        "load_avg_max": max(load) if load else math.nan,
    }
    return measurements, status, host


def _tensor_peak_bytes(run_dir: Path) -> float:
    """Peak live tensor bytes over ranks that the executor counted (`memory.json` of the run; NaN if absent)."""
    try:
        value = json.loads((run_dir / MEMORY_FILE).read_text()).get("tensor_peak_bytes")
    except (OSError, ValueError, AttributeError):
        return math.nan
    return float(value) if value else math.nan


def _row(
    rank: int,
    plan: ParallelPlan,
    step_s: float,
    peak_bytes: float,
    ms: list[StepMeasurement],
    status: str,
    run_dir: Path,
) -> dict:
    times = [m.step_time_s for m in ms]
    row = {
        "plan": plan.short()
        + ("" if plan.layers_per_stage is None else "-L" + ".".join(map(str, plan.layers_per_stage))),
        "planner_rank": rank,
        "predicted_step_time_s": step_s,
        "predicted_peak_bytes": peak_bytes,
        "measured_step_time_s": float(np.median(times)) if times else math.nan,
        "measured_min_s": min(times) if times else math.nan,
        "measured_max_s": max(times) if times else math.nan,
        "measured_peak_bytes": float(np.median([m.peak_bytes for m in ms])) if ms else math.nan,
        "measured_runs_s": ";".join(f"{t:.6g}" for t in times),
        "runs": len(ms),
        "status": status if not ms or status == "ok" else f"partial: {status}",
        "run_dir": str(run_dir),
    }
    row.update({k: getattr(plan, k) for k in PLAN_KNOBS})
    row["layers_per_stage"] = (
        "" if plan.layers_per_stage is None else ",".join(map(str, plan.layers_per_stage))
    )
    return row


def run_local_validation(
    cfg: LocalValidation,
    *,
    runner: Runner,
    cluster: ClusterSpec,
    profile: CalibrationProfile,
    out_dir: str | os.PathLike[str],
    log: Callable[[str], None] | None = None,
    runnable: Callable[[ParallelPlan], bool] | None = None,
) -> ValidationReport:
    """Select (`select_plans`: the planner's ranking by the local predictor, plans `runnable` by the
    executor), run, predict and score the plans; writes `out_dir`/validation.csv and summary.json."""
    cfg.check()
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    seq_len = cfg.seq_len or cfg.model.max_seq_len
    dtype = "fp32" if profile.device.lower() == "cpu" else "bf16"  # what the executor runs on the device
    training = TrainingSpec(global_batch_size=cfg.global_batch, seq_len=seq_len, dtype=dtype, stack="paraplan")
    predictor = LocalPredictor(profile, model=cfg.model, cluster=cluster, training=training, procs=cfg.procs)
    consts, calib = predictor.constants, predictor.calibration
    plans = select_plans(
        cfg.model, cluster, training, calibration=calib, max_plans=cfg.max_plans, top_plans=cfg.top_plans,
        runnable=runnable, predictor=predictor,
    )
    rows, observations, obs_rows = [], [], []
    for i, (rank, plan) in enumerate(plans):
        step_s, est = predictor(plan)
        run_dir = out / "runs" / f"{i:02d}-{plan.short()}"
        say(
            f"[{i + 1}/{len(plans)}] {plan.short()} (planner rank {rank}, predicted {step_s * 1e3:.1f} ms)"
        )
        speed = _speed_ratio(profile, cfg.model)
        ms, status, host = _run_one(runner, plan, cfg, training, run_dir)
        memory = predictor.memory(plan)   # the executor's allocated tensor bytes (stack paraplan)
        row = {**_row(rank, plan, step_s, memory.allocated_bytes, ms, status, run_dir), **host, "speed_ratio": speed}
        say(
            f"    measured {row['measured_step_time_s'] * 1e3:.1f} ms, peak {row['measured_peak_bytes'] / 2**20:.1f} MiB"
            if ms
            else f"    {status}"
        )
        rows.append(row)
        if ms:
            observations.append(
                Observation(
                    label=row["plan"],
                    model=cfg.model,
                    cluster=cluster,
                    training=training,
                    plan=plan,
                    step_time_s=row["measured_step_time_s"],
                    source="local",
                )
            )
            obs_rows.append(len(rows) - 1)
    df = pd.DataFrame(rows)
    df["planner_top1"] = df["planner_rank"] == df["planner_rank"].min()
    df["cv_predicted_step_time_s"] = math.nan
    fitted: dict[str, float] = {}
    if cfg.cv and len(observations) >= 3:
        say(f"cross-validating calibrated predictions over {len(observations)} runs")
        df.loc[obs_rows, "cv_predicted_step_time_s"] = cross_validated(
            observations, names=LOCAL_FIT_NAMES, calibration=calib
        )
        fitted = fit_constants(
            observations, names=LOCAL_FIT_NAMES, calibration=calib, test_fraction=0.0
        ).constants
    df["cv_predicted_peak_bytes"] = cv_peak_bytes(df)
    df["step_time_error"] = df["predicted_step_time_s"] / df["measured_step_time_s"] - 1
    df["speed_predicted_step_time_s"] = df["predicted_step_time_s"] * df["speed_ratio"]
    df["speed_step_time_error"] = df["speed_predicted_step_time_s"] / df["measured_step_time_s"] - 1
    df["cv_step_time_error"] = df["cv_predicted_step_time_s"] / df["measured_step_time_s"] - 1
    df["peak_error"] = df["predicted_peak_bytes"] / df["measured_peak_bytes"] - 1
    df["cv_peak_error"] = df["cv_predicted_peak_bytes"] / df["measured_peak_bytes"] - 1
    df["tensor_peak_error"] = df["predicted_peak_bytes"] / df["measured_tensor_peak_bytes"] - 1
    # the wall time the measured CPU work allows on idle cores: procs x rank 0's CPU per step / cores
    df["measured_cpu_bound_s"] = df["measured_cpu_s"] * cfg.procs / min(cfg.procs, os.cpu_count() or 1)
    df["cpu_bound_error"] = df["predicted_step_time_s"] / df["measured_cpu_bound_s"] - 1
    df["predicted_rank"] = df["predicted_step_time_s"].rank(method="min")
    df["measured_rank"] = df["measured_step_time_s"].rank(method="min")
    summary = summarize_validation(df)
    summary.update(
        {
            "model": cfg.model.name,
            "procs": cfg.procs,
            "steps": cfg.steps,
            "repeats": cfg.repeats,
            "global_batch": cfg.global_batch,
            "seq_len": seq_len,
            "profile_device": profile.device,
            "profile_threads": profile.threads,
            "fitted_constants": fitted,
            "load_avg_min": float(df["load_avg_min"].min()),
            "load_avg_max": float(df["load_avg_max"].max()),
        }
    )
    if cfg.repeats > 1:
        summary["per_repeat"] = per_repeat_summaries(df, cfg.repeats)
    report = ValidationReport(df, summary, consts)
    report.write(out)
    return report
