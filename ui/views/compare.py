"""Compare: two to four ranked plans side by side, differences highlighted."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from costmodel import Rejection, StepEstimate
from ui import charts, format, services, state, urlstate
from ui.format import ui_words
from ui.widgets import confidence_of, problem_caption, ranked_or_stop, show_chart

st.title("Compare")
problem = state.require_problem()
st.caption(problem_caption(problem))
view = ranked_or_stop(problem)
labels = [r.label for r in view.ranked]
if len(labels) < 2:
    st.info("Only one plan fits this problem; there is nothing to compare it with.")
    st.stop()

ss = st.session_state
linked = [labels[int(r) - 1] for r in ss.pop("_url_compare", None) or []
          if str(r).isdigit() and 1 <= int(r) <= len(labels)]
if linked or [p for p in ss.get("compare_pick", []) if p not in labels] or "compare_pick" not in ss:
    ss["compare_pick"] = (linked or list(dict.fromkeys([state.current_label(labels), *labels])))[:4 if linked else 2]
picked = st.multiselect("Plans (2 to 4)", labels, max_selections=4, key="compare_pick")
urlstate.publish({"compare": [p.split()[0].lstrip("#") for p in picked]})
if len(picked) < 2:
    st.info("Pick at least two plans to compare.")
    st.stop()

estimates: dict[str, StepEstimate] = {}
for label in picked:
    est = state.estimate(problem, view.by_label(label).plan)
    if isinstance(est, Rejection):
        st.error(f"{label}: rejected ({est.code}): {ui_words(est.message)}")
        continue
    estimates[label] = est
if len(estimates) < 2:
    st.stop()

table = pd.DataFrame({label: services.plan_row(est.plan, est, equivalent=view.by_label(label).equivalent)
                      for label, est in estimates.items()})
table = table.drop(index="plan")
_UNITS = {"step_time_s": format.seconds, "tokens_per_s": lambda v: f"{v:,.0f}", "mfu": format.percent,
          "tflops_per_gpu": lambda v: f"{v:,.1f} TFLOP/s", "memory_gib": lambda v: f"{v:,.1f} GiB",
          "headroom_gib": lambda v: f"{v:,.1f} GiB", "num_gpus": lambda v: f"{v:,}"}


def _differs(row: pd.Series) -> list[str]:
    """Highlight a row (knob or figure) whose values differ between the plans."""
    differs = row.astype(str).nunique() > 1
    return ["background-color: #fff3b0; font-weight: 600" if differs else "" for _ in row]


def _fmt(row: pd.Series) -> pd.Series:
    unit = _UNITS.get(row.name)
    return row.map(lambda v: unit(v) if unit is not None else ("-" if v in ("", None) else str(v)))


st.subheader("Side by side")
st.caption("Rows where the plans differ are highlighted (the placement row too: plans with the same knobs "
           "may sit differently on the servers).")
conf = confidence_of(problem)
if conf is not None:
    st.caption(f"Predicted step time and throughput: {conf.text()}. Plans closer than that to each other may "
               "rank either way in practice.")
shown = table.apply(_fmt, axis=1)  # one type per column (values of a row differ in type), formatted once
shown = shown.rename(index={"step_time_s": "step time", "tokens_per_s": "tokens/s", "mfu": "MFU",
                            "tflops_per_gpu": "TFLOP/s per GPU", "memory_gib": "memory per GPU",
                            "headroom_gib": "headroom", "num_gpus": "GPUs", "same_as": "same as"})
st.dataframe(shown.style.apply(_differs, axis=1), width="stretch", key="compare_table",
             height=35 * (len(shown) + 1) + 3)  # every row visible: no scrolling to find a difference

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
            show_chart(charts.gantt_chart(est.timeline, width_px=1000 // len(estimates), title=label))
        else:
            st.caption(f"{label}: no timeline events")
