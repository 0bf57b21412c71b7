"""The Run page's views of runs in the runs folder: curves of several runs overlaid, and one run in full -
predicted vs measured (error in %), the simulated step with the measured one under it, stage by stage,
and memory over the measured step."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from costmodel import ParallelPlan
from ui import charts, confidence, format, jobs, run_charts, runs, trace
from ui.format import ui_words
from ui.widgets import show_chart

__all__ = ["overlay_runs", "show_run", "stage_lanes"]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def overlay_runs(paths: list[Path], *, key: str) -> None:
    """Loss, tokens/s and memory per step of the runs, one line each."""
    frames = []
    for path in paths:
        df = jobs.read_metrics(path / "metrics.jsonl")
        if df.empty:
            continue
        if "traced" in df:  # the profiled step is slower by design: not part of the curves
            df = df[df["traced"].isna() | (df["traced"] == False)]  # noqa: E712 (NaN-aware)
        frames.append(df.assign(run=path.name))
    if not frames:
        st.caption("No steps recorded yet.")
        return
    df = pd.concat(frames, ignore_index=True)
    if "peak_bytes" in df:
        df["memory_mib"] = df["peak_bytes"] / 2**20
    cols = st.columns(3)
    for col, (y, title, unit) in zip(cols, (("loss", "Loss", "loss"), ("tokens_per_s", "Tokens/s", "tokens/s"),
                                            ("memory_mib", "Memory (resident-set rise, rank 0)", "MiB")), strict=True):
        if y in df:
            show_chart(run_charts.overlay_chart(df, y=y, y_title=unit, title=title), where=col)
    if "val_loss" in df and df["val_loss"].notna().any():  # every --eval-every steps and at the end
        val = df.dropna(subset=["val_loss"])
        cols = st.columns(3)
        for col, (y, title) in zip(cols, (("val_loss", "Validation loss (held-out split)"),
                                          ("val_perplexity", "Validation perplexity")), strict=False):
            show_chart(run_charts.overlay_chart(val, y=y, y_title=y.removeprefix("val_"), title=title), where=col)


def stage_lanes(plan: ParallelPlan, ranks: list[int]) -> dict[int, str]:
    """'stage s · rank r' per rank: the pipeline stage of each rank under the plan's placement."""
    from costmodel.network.placement import axis_groups

    stage_of = {int(r): s for row in axis_groups(plan, "pp") for s, r in enumerate(row)}
    return {r: f"stage {stage_of.get(r, 0)} · rank {r}" for r in ranks}


@st.cache_data(show_spinner=False, max_entries=32)
def _predicted(run_dir: str, profile: str, _stamp: tuple[float, float]) -> tuple:
    measured, predicted = runs.predict(Path(run_dir), Path(profile))
    return measured, predicted


@st.cache_data(show_spinner=False, max_entries=16)
def _measured_step(run_dir: str, plan_json: str, _stamp: float) -> trace.MeasuredStep | None:
    plan = ParallelPlan.model_validate_json(plan_json)
    files = trace.trace_files(run_dir)
    return trace.read_run_trace(run_dir, lanes=stage_lanes(plan, sorted(files)))


def _tensor_peak(run_dir: Path) -> float | None:
    try:
        return json.loads((run_dir / "memory.json").read_text()).get("tensor_peak_bytes") or None
    except (OSError, ValueError, AttributeError):
        return None


def show_run(info: runs.RunInfo, *, running: bool = False) -> None:
    """One run: status, predicted vs measured, simulated vs measured step, memory over the step."""
    st.subheader(f"Run {info.name}")
    req = info.request
    if req.get("changes"):
        st.caption("Scaled to this machine: " + "; ".join(req["changes"]))
    if info.summary is None:
        if running:
            st.info("Running: predicted vs measured appears when it finishes.")
        else:
            log = info.path / "job.log"
            st.error(f"This run did not finish ({info.status}); see {log}.")
        return
    if info.summary.validation:
        st.markdown("**Validation** on the held-out split (`--eval-every` steps and the last)")
        val = pd.DataFrame([v.model_dump() for v in info.summary.validation]).dropna(axis=1, how="all")
        st.dataframe(val, hide_index=True, key="run_validation")
    profile = Path(req.get("profile") or runs.profile_path(info.path.parent, info.summary.model, info.summary.world_size))
    try:
        measured, predicted = _predicted(str(info.path), str(profile),
                                         (_mtime(info.path / "summary.json"), _mtime(profile)))
    except ValueError as exc:
        st.error(f"Prediction: {ui_words(str(exc))}")
        return
    table = runs.comparison_table(measured, predicted, tensor_peak_bytes=_tensor_peak(info.path))
    st.markdown(f"**Predicted vs measured** · {measured.plan.short()} on {measured.world_size} x {measured.device} · "
                f"{measured.model}, batch {measured.global_batch_size} x {measured.seq_len}, median step of "
                f"{measured.steps} (warm-up and profiled steps left out)")
    st.markdown(" · ".join(f"{r.metric}: measured {_fmt(r.unit, r.measured)}, predicted {_fmt(r.unit, r.predicted)}, "
                           f"**error {format.signed_percent(r.error_pct / 100.0)}**" for r in table.itertuples()))
    show_chart(run_charts.predicted_vs_measured_chart(table, title=""), height=190, pad_px=90)
    shown = table.assign(measured=[_fmt(r.unit, r.measured) for r in table.itertuples()],
                         predicted=[_fmt(r.unit, r.predicted) for r in table.itertuples()])
    st.dataframe(shown.drop(columns=["unit"]), hide_index=True, width="stretch", key="run_compare",
                 column_config={"error_pct": st.column_config.NumberColumn("error (%)", format="%+.1f%%")})
    conf = confidence.closest(confidence.load_cases(), device=measured.device, gpus=measured.world_size,
                              params=confidence.model_params(_model(measured.model)))
    st.caption(f"Predicted as `paraplan validate --local` predicts (profile `{profile}`). Error = predicted / "
               f"measured - 1. The closed loop on the validated machine: {conf.text() if conf else 'no cases'}. "
               f"{_load_note(info.path)}")
    _timelines(info, predicted)


def _load_note(run_dir: Path) -> str:
    """How busy the machine was during the timed steps: other jobs on its cores slow the measured step
    down (wall time > the CPU time the step needed), which no prediction of this machine's speed sees."""
    import os

    df = jobs.read_metrics(run_dir / "metrics.jsonl")
    if df.empty or "load_avg_1m" not in df:
        return ""
    timed = df.iloc[1:] if len(df) > 1 else df
    if "traced" in timed:
        timed = timed[timed["traced"].isna() | (timed["traced"] == False)]  # noqa: E712
    load = timed["load_avg_1m"].dropna()
    note = ""
    if len(load):
        note = (f"Host load during the timed steps (1-min load average): {load.min():.1f}-{load.max():.1f} on "
                f"{os.cpu_count()} cores")
    if "cpu_time_s" in timed and timed["cpu_time_s"].notna().any():
        note += (f"; rank 0 needed {format.seconds(float(timed['cpu_time_s'].median()))} of CPU per step, "
                 f"its wall step took {format.seconds(float(timed['step_time_s'].median()))}")
    return note + ". A busy machine makes the measured step slower than predicted." if note else ""


def _model(name: str) -> object:
    from costmodel import load_model

    return load_model(name)


def _fmt(unit: str, value: float) -> str:
    if unit == "s":
        return format.seconds(value)
    if unit == "GiB":
        return format.gib(value * format.GIB)
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    return f"{value:,.0f}"


def _timelines(info: runs.RunInfo, predicted: runs.LocalPrediction) -> None:
    est = predicted.estimate
    st.markdown("**The step, simulated and measured**")
    if est.timeline:
        show_chart(charts.gantt_chart(est.timeline, title="Simulated (cost model, this machine's profile)"))
    measured = _measured_step(str(info.path), info.summary.plan.model_dump_json(), _mtime(info.path / "trace"))
    if measured is None:
        st.caption("This run recorded no profiler trace (start it with the trace box ticked).")
        return
    lanes = sorted(measured.events["lane"].unique(), key=_lane_order)
    show_chart(run_charts.measured_timeline_chart(
        measured.events, lanes=lanes, title=f"Measured (torch.profiler, last step: {measured.step_ms:,.1f} ms; "
                                            "slower than a timed step: profiling costs time)"))
    st.caption("Measured lanes: each rank's main thread ('stage s · rank r'), and its background communication "
               "thread where it has one (DDP's gradient all-reduce). fwd = forward ops, bwd = autograd's backward, "
               "send/recv = pipeline transfers, dp_comm = collectives, optimizer = clipping and AdamW.")
    if not measured.memory.empty:
        cpu = info.summary.device.lower() == "cpu"
        show_chart(run_charts.memory_over_step_chart(
            measured.memory, title="Memory over the measured step" + (
                " (CPU allocator: bytes allocated during the step, on top of weights and optimizer states)"
                if cpu else " (CUDA allocator)"), unit_bytes=2**20 if cpu else format.GIB, unit="MiB" if cpu else "GiB"))
        peak = float(measured.memory["allocated_bytes"].max())
        st.caption(f"Peak during the step: {format.gib(peak)} (max over ranks); the cost model's peak of live "
                   f"tensors per rank (executor, stack paraplan): {format.gib(est.memory.allocated_bytes)}.")


def _lane_order(lane: str) -> tuple:
    parts = lane.replace("·", " ").split()
    nums = [int(p) for p in parts if p.isdigit()]
    return (*nums, "comm" in lane)
