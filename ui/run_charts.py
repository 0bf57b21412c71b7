"""Altair charts of real runs: predicted vs measured (a panel per figure, each on its own scale, the
error in %), curves of several runs overlaid, and the measured step (from its profiler trace) drawn
like the simulated timeline, with memory over the step. Pure functions: data in, chart out."""

from __future__ import annotations

import altair as alt
import pandas as pd

from ui.charts import _KIND_COLORS, _KIND_ORDER
from ui.format import signed_percent

__all__ = ["predicted_vs_measured_chart", "overlay_chart", "measured_timeline_chart", "memory_over_step_chart"]

_SOURCE = alt.Scale(domain=["measured", "predicted"], range=["#4c78a8", "#f58518"])


def predicted_vs_measured_chart(table: pd.DataFrame, *, title: str) -> alt.HConcatChart:
    """One small bar chart per row of `runs.comparison_table` (metric, unit, measured, predicted,
    error_pct): each panel has its own y scale (seconds, tokens/s and GiB differ by orders of magnitude)
    and says the error in its title."""
    panels = []
    for row in table.itertuples():
        df = pd.DataFrame({"source": ["measured", "predicted"], "value": [row.measured, row.predicted]})
        bars = alt.Chart(df).mark_bar(size=44).encode(
            x=alt.X("source:N", title=None, sort=["measured", "predicted"], axis=alt.Axis(labelAngle=0)),
            y=alt.Y("value:Q", title=row.unit, axis=alt.Axis(format="~s" if row.unit == "tokens/s" else "~g")),
            color=alt.Color("source:N", scale=_SOURCE, legend=None),
            tooltip=["source", alt.Tooltip("value:Q", format=",.4g", title=row.unit)],
        )
        text = bars.mark_text(dy=-6, fontSize=11).encode(text=alt.Text("value:Q", format=",.3~r"))
        panels.append((bars + text).properties(
            width=170, height=190, title=f"{row.metric}: {signed_percent(row.error_pct / 100.0)}"))
    return alt.hconcat(*panels).properties(title=title) if title else alt.hconcat(*panels)


def overlay_chart(df: pd.DataFrame, *, y: str, y_title: str, title: str) -> alt.Chart:
    """One line per run (`run`, `step`, `y` columns), coloured by run."""
    return alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=18)).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", title="run", legend=alt.Legend(orient="bottom", columns=1, labelLimit=420)),
        tooltip=["run", "step", alt.Tooltip(f"{y}:Q", format=",.4~g", title=y_title)],
    ).properties(height=220, title=title)


def measured_timeline_chart(events: pd.DataFrame, *, lanes: list[str], title: str) -> alt.Chart:
    """The measured step per rank (`ui.trace` intervals), in the simulated timeline's colours."""
    kinds = [k for k in _KIND_ORDER if k in set(events["kind"])]
    colors = [_KIND_COLORS[_KIND_ORDER.index(k)] for k in kinds]
    zoom = alt.selection_interval(bind="scales", encodings=["x"])
    chart = alt.Chart(events).mark_bar().encode(
        x=alt.X("start_ms:Q", title="time in step (ms)"), x2="end_ms:Q",
        y=alt.Y("lane:N", sort=lanes, title=None, axis=alt.Axis(labelLimit=240)),
        color=alt.Color("kind:N", scale=alt.Scale(domain=kinds, range=colors), title="event"),
        tooltip=["lane", "kind", alt.Tooltip("start_ms:Q", format=",.2f", title="start (ms)"),
                 alt.Tooltip("duration_ms:Q", format=",.3f", title="duration (ms)")],
    ).add_params(zoom)
    return chart.properties(height=max(60, 26 * len(lanes), 18 * len(kinds)), title=title)


def memory_over_step_chart(memory: pd.DataFrame, *, title: str, unit_bytes: float = 2**20,
                           unit: str = "MiB") -> alt.Chart:
    """Allocated bytes over the profiled step, one line per rank (`lane`)."""
    df = memory.assign(value=memory["allocated_bytes"] / unit_bytes)
    return alt.Chart(df).mark_line(interpolate="step-after").encode(
        x=alt.X("time_ms:Q", title="time in step (ms)"), y=alt.Y("value:Q", title=f"allocated ({unit})"),
        color=alt.Color("lane:N", title=None),
        tooltip=["lane", alt.Tooltip("time_ms:Q", format=",.2f"), alt.Tooltip("value:Q", format=",.2f", title=unit)],
    ).properties(height=200, title=title)
