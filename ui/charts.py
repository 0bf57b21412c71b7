"""Altair charts of estimates, searches and runs (pure functions: data in, chart out; no Streamlit)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from costmodel import MemoryBreakdown, StepEstimate, TimeBreakdown, TimelineEvent

__all__ = [
    "GIB", "rejections_chart", "timeline_frame", "gantt_chart", "timeline_caption", "time_breakdown_frame",
    "time_breakdown_chart", "memory_frame", "memory_chart", "pareto_chart", "sweep_chart", "compare_time_chart",
    "compare_memory_chart",
]

GIB = 2**30
"""Bytes per GiB (memory is shown in GiB, as GPU capacities are quoted)."""

_KIND_ORDER = ["fwd", "bwd", "bwd_input", "bwd_weight", "recompute", "send", "recv", "dp_comm", "optimizer"]
_KIND_COLORS = ["#4c78a8", "#f58518", "#e45756", "#ff9da6", "#b279a2", "#54a24b", "#88d27a", "#9d755d",
                "#bab0ac"]
_TIME_PARTS = [("compute_s", "compute"), ("tp_comm_s", "TP comm"), ("cp_comm_s", "CP comm"),
               ("ep_comm_s", "EP all-to-all"), ("dp_comm_s", "DP comm"), ("pp_comm_s", "PP comm"), ("bubble_s", "pipeline bubble"),
               ("optimizer_s", "optimizer")]
_MEM_PARTS = [("parameters_bytes", "parameters"), ("gradients_bytes", "gradients"),
              ("optimizer_bytes", "optimizer states"), ("activations_bytes", "activations"),
              ("buffers_bytes", "buffers")]


def timeline_frame(events: Sequence[TimelineEvent]) -> pd.DataFrame:
    """One row per simulated event, times in ms, with a label for the tooltip."""
    rows = [{
        "stage": f"stage {e.stage}", "stage_index": e.stage, "kind": e.kind, "micro_batch": e.micro_batch,
        "chunk": e.chunk, "start_ms": e.start_s * 1e3, "end_ms": e.end_s * 1e3,
        "duration_ms": (e.end_s - e.start_s) * 1e3,
        "label": str(e.micro_batch) if e.micro_batch >= 0 else "",
    } for e in events]
    return pd.DataFrame(rows, columns=["stage", "stage_index", "kind", "micro_batch", "chunk", "start_ms",
                                       "end_ms", "duration_ms", "label"])


def gantt_chart(events: Sequence[TimelineEvent], *, width_px: int = 1000, min_label_px: float = 16.0,
                title: str = "Pipeline timeline (simulated)") -> alt.Chart:
    """Pipeline timeline: one lane per pipeline rank, bars coloured by event kind (fwd/bwd/comm).

    Readable at 16-64 micro-batches: a bar carries its micro-batch number only where the bar is at
    least `min_label_px` wide on a `width_px` chart (so labels never overlap), outlines are dropped
    when bars are dense, later model chunks of an interleaved schedule are drawn lighter (said in the
    caption, not in an extra legend), and the time axis zooms with the mouse wheel."""
    df = timeline_frame(events)
    stages = [f"stage {i}" for i in sorted(df["stage_index"].unique())]
    kinds = [k for k in _KIND_ORDER if k in set(df["kind"])]
    colors = [_KIND_COLORS[_KIND_ORDER.index(k)] for k in kinds]
    y = alt.Y("stage:N", sort=stages, title=None)
    dense = len(df) > 200  # outlines would hide the bars
    chunks = df["chunk"].nunique() > 1  # interleaved: later model chunks drawn lighter
    zoom = alt.selection_interval(bind="scales", encodings=["x"])
    bars = alt.Chart(df).mark_bar(stroke=None if dense else "white", strokeWidth=0.3).encode(
        x=alt.X("start_ms:Q", title="time in step (ms)"), x2="end_ms:Q", y=y,
        color=alt.Color("kind:N", scale=alt.Scale(domain=kinds, range=colors), title="event"),
        opacity=(alt.Opacity("chunk:O", scale=alt.Scale(range=[1.0, 0.5]), legend=None) if chunks
                 else alt.value(1.0)),
        tooltip=["stage", "kind", "micro_batch", "chunk", alt.Tooltip("start_ms:Q", format=",.2f", title="start (ms)"),
                 alt.Tooltip("duration_ms:Q", format=",.3f", title="duration (ms)")],
    ).add_params(zoom)
    chart = bars
    total_ms = float(df["end_ms"].max() or 1.0) if len(df) else 1.0
    wide = df[df["kind"].isin(["fwd", "bwd"]) & (df["duration_ms"] / total_ms * width_px >= min_label_px)]
    if len(wide):
        wide = wide.assign(mid_ms=(wide["start_ms"] + wide["end_ms"]) / 2)
        text = alt.Chart(wide).mark_text(fontSize=9, color="white").encode(x="mid_ms:Q", y=y, text="label:N")
        chart = bars + text
    height = max(18 * len(kinds), 26 * len(stages), 60)  # room for the legend, and a lane per stage
    return chart.properties(height=height, title=title)


def timeline_caption(events: Sequence[TimelineEvent], *, width_px: int = 1000, min_label_px: float = 16.0) -> str:
    """What the timeline shows, including what it leaves out at this density."""
    df = timeline_frame(events)
    mbs = int(df.loc[df["micro_batch"] >= 0, "micro_batch"].nunique()) if len(df) else 0
    total_ms = float(df["end_ms"].max() or 1.0) if len(df) else 1.0
    compute = df[df["kind"].isin(["fwd", "bwd"])]
    labelled = int((compute["duration_ms"] / total_ms * width_px >= min_label_px).sum())
    parts = [f"Simulated events of one step per pipeline rank: {mbs} micro-batches"]
    if labelled < len(compute):
        parts.append(f"micro-batch numbers on the {labelled} of {len(compute)} compute bars wide enough for them "
                     "(hover a bar for its number; scroll over the chart to zoom in time)")
    else:
        parts.append("micro-batch numbers on the bars")
    if df["chunk"].nunique() > 1:
        parts.append("later model chunks of the interleaved schedule are lighter")
    return "; ".join(parts) + "."


def time_breakdown_frame(time: TimeBreakdown) -> pd.DataFrame:
    """Step-time parts in seconds and as a share of the step."""
    total = time.total_s or 1.0
    return pd.DataFrame([{"part": label, "seconds": getattr(time, key), "share": getattr(time, key) / total}
                         for key, label in _TIME_PARTS])


def time_breakdown_chart(time: TimeBreakdown) -> alt.Chart:
    """Horizontal bars: where the step's critical path goes."""
    df = time_breakdown_frame(time)
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("seconds:Q", title="seconds per step"),
        y=alt.Y("part:N", sort=[label for _, label in _TIME_PARTS], title=None),
        color=alt.Color("part:N", legend=None),
        tooltip=["part", alt.Tooltip("seconds:Q", format=".4f"), alt.Tooltip("share:Q", format=".1%")],
    ).properties(height=200, title="Step-time breakdown (critical path)")


def memory_frame(stages: Sequence[MemoryBreakdown]) -> pd.DataFrame:
    """Long frame: one row per (pipeline stage, memory part), in GiB."""
    rows = []
    for i, mem in enumerate(stages):
        for key, label in _MEM_PARTS:
            rows.append({"stage": f"stage {i}", "stage_index": i, "part": label,
                         "gib": getattr(mem, key) / GIB, "peak_gib": mem.peak_bytes / GIB})
    return pd.DataFrame(rows, columns=["stage", "stage_index", "part", "gib", "peak_gib"])


def memory_chart(est: StepEstimate) -> alt.Chart:
    """Memory per pipeline stage (stacked parts, peak tick) against the GPU's capacity (red rule)."""
    stages = est.stage_memory or (est.memory,)
    df = memory_frame(stages)
    order = [f"stage {i}" for i in range(len(stages))]
    bars = alt.Chart(df).mark_bar().encode(
        x=alt.X("stage:N", sort=order, title=None),
        y=alt.Y("sum(gib):Q", title="GiB per GPU"),
        color=alt.Color("part:N", sort=[label for _, label in _MEM_PARTS], title="memory"),
        tooltip=["stage", "part", alt.Tooltip("gib:Q", format=".2f")],
    )
    peaks = df.drop_duplicates("stage")
    peak = alt.Chart(peaks).mark_tick(color="black", thickness=2, size=30).encode(
        x=alt.X("stage:N", sort=order), y="peak_gib:Q", tooltip=[alt.Tooltip("peak_gib:Q", format=".2f")])
    cap = pd.DataFrame({"capacity_gib": [est.capacity_bytes / GIB], "label": ["GPU capacity"]})
    rule = alt.Chart(cap).mark_rule(color="red", strokeDash=[6, 3], size=2).encode(
        y="capacity_gib:Q", tooltip=["label", alt.Tooltip("capacity_gib:Q", format=".1f")])
    return (bars + peak + rule).properties(height=280, title="Memory per pipeline stage vs capacity")


def pareto_chart(df: pd.DataFrame, *, front: pd.DataFrame | None = None, max_ratio: float = 3.0) -> alt.Chart:
    """Step time vs memory per GPU of every ranked plan; the Pareto front drawn as a line. The y axis
    spans the ranked plans (front points slower than `max_ratio` x the best are left off; the
    chart's title counts them), so plans a few percent apart stay apart."""
    varies = df["num_gpus"].nunique() > 1 if "num_gpus" in df else False
    color = (alt.Color("num_gpus:O", title="GPUs", scale=alt.Scale(scheme="viridis")) if varies
             else alt.value("#4c78a8"))
    lo = float(df["step_time_s"].min())
    hi = max(float(df["step_time_s"].max()), lo * 1.02)
    shown = front
    hidden = 0
    if front is not None and not front.empty:
        shown = front[front["step_time_s"] <= lo * max_ratio]
        hidden = len(front) - len(shown)
        hi = max(hi, float(shown["step_time_s"].max()) if len(shown) else hi)
    pad = (hi - lo) * 0.08
    y_scale = alt.Scale(domain=[max(0.0, lo - pad), hi + pad], zero=False, nice=False)
    tooltip = ["plan", "placement", alt.Tooltip("step_time_s:Q", format=",.3f", title="step time (s)"),
               alt.Tooltip("memory_gib:Q", format=",.1f", title="memory/GPU (GiB)"), "num_gpus"]
    base = alt.Chart(df).mark_circle(size=70, opacity=0.6).encode(
        x=alt.X("memory_gib:Q", title="peak memory per GPU (GiB)"),
        y=alt.Y("step_time_s:Q", title="step time (s)", scale=y_scale),
        color=color, tooltip=[t for t in tooltip if not isinstance(t, str) or t in df.columns],
    )
    if shown is None or shown.empty:
        return base.properties(height=300, title="Step time vs memory")
    line = alt.Chart(shown.sort_values("memory_gib")).mark_line(point=True, color="#e45756").encode(
        x="memory_gib:Q", y=alt.Y("step_time_s:Q", scale=y_scale), tooltip=["plan"])
    note = (f"{hidden} slower front plan{'s' if hidden > 1 else ''} (> {max_ratio:g}x the best step) off the chart"
            if hidden else "")
    return (base + line).properties(height=300, title=alt.TitleParams("Step time vs memory (red: Pareto front)",
                                                                      subtitle=note))


def rejections_chart(rejections: pd.DataFrame) -> alt.Chart:
    """Rejected candidate plans by reason (`reason`, `plans` columns), most frequent on top."""
    return alt.Chart(rejections).mark_bar().encode(
        x=alt.X("plans:Q", title="plans rejected"),
        y=alt.Y("reason:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320)),
        tooltip=["reason", "plans"],
    ).properties(height=max(60, 28 * len(rejections)), title="Why other plans were rejected")


def sweep_chart(df: pd.DataFrame, *, x: str, y: str, y_title: str, title: str,
                order: Sequence | None = None) -> alt.Chart:
    """The best plan's figure per swept value: a line over numbers; bars over names (GPU types), in
    `order` (the table's), since a line between categories means nothing."""
    tooltip = [c for c in df.columns if c in (x, y, "plan", "num_gpus", "mfu")]
    if pd.api.types.is_numeric_dtype(df[x]):
        return alt.Chart(df).mark_line(point=True).encode(
            x=alt.X(f"{x}:Q", title=x), y=alt.Y(f"{y}:Q", title=y_title), tooltip=tooltip,
        ).properties(height=260, title=title)
    return alt.Chart(df).mark_bar().encode(
        x=alt.X(f"{x}:N", title=x, sort=list(order) if order is not None else list(df[x]),
                axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"{y}:Q", title=y_title), tooltip=tooltip,
    ).properties(height=260, title=title)


def compare_time_chart(estimates: dict[str, StepEstimate]) -> alt.Chart:
    """Stacked step-time breakdown, one bar per plan."""
    rows = [{"plan": name, **row} for name, est in estimates.items()
            for row in time_breakdown_frame(est.time).to_dict("records")]
    return alt.Chart(pd.DataFrame(rows)).mark_bar().encode(
        x=alt.X("seconds:Q", title="seconds per step"), y=alt.Y("plan:N", title=None, sort=list(estimates)),
        color=alt.Color("part:N", sort=[label for _, label in _TIME_PARTS], title="part"),
        tooltip=["plan", "part", alt.Tooltip("seconds:Q", format=".4f")],
    ).properties(height=60 + 40 * len(estimates), title="Step time by part")


def compare_memory_chart(estimates: dict[str, StepEstimate]) -> alt.Chart:
    """Stacked memory of each plan's most loaded GPU, with the capacity as a rule."""
    rows = [{"plan": name, "part": label, "gib": getattr(est.memory, key) / GIB}
            for name, est in estimates.items() for key, label in _MEM_PARTS]
    bars = alt.Chart(pd.DataFrame(rows)).mark_bar().encode(
        x=alt.X("sum(gib):Q", title="GiB on the most loaded GPU"), y=alt.Y("plan:N", title=None, sort=list(estimates)),
        color=alt.Color("part:N", sort=[label for _, label in _MEM_PARTS], title="memory"),
        tooltip=["plan", "part", alt.Tooltip("gib:Q", format=".2f")],
    )
    cap = pd.DataFrame({"capacity_gib": [max(e.capacity_bytes for e in estimates.values()) / GIB]})
    rule = alt.Chart(cap).mark_rule(color="red", strokeDash=[6, 3], size=2).encode(x="capacity_gib:Q")
    return (bars + rule).properties(height=60 + 40 * len(estimates), title="Memory per GPU by part")
