"""Small formatting helpers and Streamlit pieces that several pages share."""

from __future__ import annotations

from typing import Any

import streamlit as st

from costmodel import ParallelPlan, Rejection, StepEstimate
from ui import state
from ui.charts import GIB
from ui.problem import Problem
from ui.services import RankedPlan, SearchView

__all__ = ["human_count", "problem_caption", "pick_plan", "estimate_metrics", "ranked_or_stop", "show_chart"]


def human_count(value: float) -> str:
    """1234567 -> '1.23 M' (for tokens/s and plan counts)."""
    for scale, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def problem_caption(problem: Problem) -> str:
    """One line: model, cluster, batch, and the software stack every time on the page assumes."""
    c, t = problem.cluster, problem.training
    return (f"**{problem.model.name}** on **{c.num_nodes} x {c.gpus_per_node} {c.gpu.name}** "
            f"({c.name}, {c.num_gpus} GPUs) · global batch {t.global_batch_size} x {t.seq_len} tokens · "
            f"{t.dtype} · times assume stack **{t.stack}**")


def ranked_or_stop(problem: Problem) -> SearchView:
    """The cached search result; stops the page when the planner is missing or nothing fits."""
    state.require_api("planner.search", what="Planning")
    try:
        with st.spinner(f"Searching plans for {problem.model.name} on {problem.cluster.num_gpus} GPUs..."):
            view = state.search(problem)
    except ValueError as exc:
        st.error(f"Search: {exc}")
        st.stop()
    if not view.fits:
        st.error(f"**No plan fits.** {view.message}")
        st.stop()
    return view


def pick_plan(view: SearchView, *, key: str, label: str = "Plan") -> RankedPlan:
    """A selectbox over the ranked plans, defaulting to the one selected on the Plan page."""
    labels = [r.label for r in view.ranked]
    current = state.selected_label()
    if current not in labels and str(st.query_params.get("rank", "")).isdigit():
        rank = int(st.query_params["rank"])  # a shared link may name the plan by rank
        current = labels[rank - 1] if 1 <= rank <= len(labels) else None
    picked = st.selectbox(label, labels, index=labels.index(current) if current in labels else 0, key=key)
    state.select(picked)
    return view.by_label(picked)


def estimate_metrics(est: StepEstimate | Rejection, *, plan: ParallelPlan | None = None) -> None:
    """A row of headline figures for one estimate (or the rejection's message)."""
    if isinstance(est, Rejection):
        st.error(f"Rejected ({est.code}): {est.message}")
        return
    c = st.columns(5)
    c[0].metric("Step time", f"{est.step_time_s:.3f} s")
    c[1].metric("Tokens/s", human_count(est.tokens_per_s))
    c[2].metric("MFU", f"{est.mfu:.1%}", f"HFU {est.hfu:.1%}", delta_color="off")
    c[3].metric("Peak memory", f"{est.memory.peak_bytes / GIB:.1f} GiB",
                f"of {est.capacity_bytes / GIB:.0f} GiB", delta_color="off")
    c[4].metric("GPUs", f"{est.num_gpus}", (plan or est.plan).short(), delta_color="off")


def show_chart(chart: Any, *, where: Any = None, pad_px: int = 110) -> None:
    """Draw an Altair chart at its own plot height plus room for title, axis and legend (Streamlit
    otherwise squeezes charts to a default height)."""
    height = chart.height if isinstance(chart.height, int | float) else 260
    (where or st).altair_chart(chart, width="stretch", height=int(height) + pad_px)
