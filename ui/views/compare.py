"""Compare: two to four ranked plans side by side, differences highlighted."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from costmodel import Rejection, StepEstimate
from ui import charts, services, state
from ui.widgets import problem_caption, ranked_or_stop, show_chart

st.title("Compare")
problem = state.require_problem()
st.caption(problem_caption(problem))
view = ranked_or_stop(problem)
labels = [r.label for r in view.ranked]
if len(labels) < 2:
    st.info("Only one plan fits this problem; there is nothing to compare it with.")
    st.stop()

default = list(dict.fromkeys([state.selected_label() or labels[0], *labels]))[:2]
picked = st.multiselect("Plans (2 to 4)", labels, default=[d for d in default if d in labels],
                        max_selections=4, key="compare_pick")
if len(picked) < 2:
    st.info("Pick at least two plans to compare.")
    st.stop()

estimates: dict[str, StepEstimate] = {}
for label in picked:
    est = state.estimate(problem, view.by_label(label).plan)
    if isinstance(est, Rejection):
        st.error(f"{label}: rejected ({est.code}): {est.message}")
        continue
    estimates[label] = est
if len(estimates) < 2:
    st.stop()

table = pd.DataFrame({label: services.plan_row(est.plan, est) for label, est in estimates.items()})
table = table.drop(index="plan")


def _differs(row: pd.Series) -> list[str]:
    """Highlight a row (knob or figure) whose values differ between the plans."""
    differs = row.astype(str).nunique() > 1
    return ["background-color: #fff3b0; font-weight: 600" if differs else "" for _ in row]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


st.subheader("Side by side")
st.caption("Rows where the plans differ are highlighted.")
shown = table.map(_fmt)  # one type per column (values of a row differ in type), formatted once
st.dataframe(shown.style.apply(_differs, axis=1), width="stretch", key="compare_table")

left, right = st.columns(2)
with left:
    show_chart(charts.compare_time_chart(estimates))
with right:
    show_chart(charts.compare_memory_chart(estimates))

st.subheader("Timelines")
cols = st.columns(len(estimates))
for col, (label, est) in zip(cols, estimates.items(), strict=True):
    with col:
        if est.timeline:
            show_chart(charts.gantt_chart(est.timeline).properties(title=label))
        else:
            st.caption(f"{label}: no timeline events")
