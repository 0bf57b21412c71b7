"""Small Streamlit pieces that several pages share: the problem caption, the cached search with its
stop conditions, the plan picker that follows the selection, headline figures with units and their
confidence, and charts drawn at their own height."""

from __future__ import annotations

from typing import Any

import streamlit as st

from costmodel import ParallelPlan, Rejection, StepEstimate
from ui import confidence, format, state
from ui.format import ui_words
from ui.problem import Problem
from ui.services import RankedPlan, SearchView

__all__ = ["human_count", "problem_caption", "pick_plan", "estimate_metrics", "ranked_or_stop", "show_chart",
           "confidence_of", "equivalence_info"]


def human_count(value: float) -> str:
    """1234567 -> '1.23 M' (for plan counts)."""
    for scale, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def problem_caption(problem: Problem) -> str:
    """One line: model, cluster, batch, and the software stack every time on the page assumes."""
    c, t = problem.cluster, problem.training
    return (f"**{problem.model.name}** on **{c.num_nodes:,} x {c.gpus_per_node} {c.gpu.name}** "
            f"({c.name}, {c.num_gpus:,} GPUs) · global batch {t.global_batch_size:,} x {t.seq_len:,} tokens · "
            f"{t.dtype} · times assume stack **{t.stack}**")


@st.cache_data(show_spinner=False, max_entries=64)
def _confidence(model_json: str, device: str, gpus: int) -> confidence.Confidence | None:
    from costmodel import ModelSpec

    params = confidence.model_params(ModelSpec.model_validate_json(model_json))
    return confidence.closest(confidence.load_cases(), device=device, params=params, gpus=gpus)


def confidence_of(problem: Problem, num_gpus: int | None = None) -> confidence.Confidence | None:
    """The cost model's error on the validated runs closest to this problem (cached)."""
    return _confidence(problem.model.model_dump_json(), problem.cluster.gpu.name,
                       num_gpus or problem.cluster.num_gpus)


def ranked_or_stop(problem: Problem) -> SearchView:
    """The cached search result; stops the page when the planner is missing or nothing fits."""
    state.require_api("planner.search", what="Planning")
    try:
        with st.spinner(f"Searching plans for {problem.model.name} on {problem.cluster.num_gpus:,} GPUs..."):
            view = state.search(problem)
    except ValueError as exc:
        st.error(f"Search: {ui_words(str(exc))}")
        st.stop()
    if not view.fits:
        st.error(f"**No plan fits.** {ui_words(view.message or '')}")
        st.stop()
    return view


def pick_plan(view: SearchView, *, key: str, label: str = "Plan") -> RankedPlan:
    """A selectbox over the ranked plans that follows the plan selected anywhere in the app (the Plan
    page's table or picker, or the link's `rank`); picking here selects it everywhere."""
    labels = [r.label for r in view.ranked]
    current = state.current_label(labels)
    st.session_state[key] = current  # follow the selection made on another page

    def _picked() -> None:
        state.select(st.session_state[key])

    picked = st.selectbox(label, labels, key=key, on_change=_picked)
    state.select(picked)
    state.publish_rank(picked)
    return view.by_label(picked)


def equivalence_info(ranked: RankedPlan) -> None:
    """Say which other placements were folded into this plan, and why they change nothing."""
    if ranked.equivalent:
        st.info(f"**Equivalent plans folded into this one.** {ranked.equivalent_note}. They are not listed "
                "separately because no figure the cost model reports differs.", icon=":material/join:")


def estimate_metrics(est: StepEstimate | Rejection, *, plan: ParallelPlan | None = None,
                     problem: Problem | None = None) -> None:
    """A row of headline figures (with units) for one estimate, the confidence band under them, or the
    rejection's message."""
    if isinstance(est, Rejection):
        st.error(f"Rejected ({est.code}): {ui_words(est.message)}")
        return
    conf = confidence_of(problem, est.num_gpus) if problem is not None else None
    band = conf.short() if conf is not None else None
    c = st.columns(6)
    c[0].metric("Step time", format.seconds(est.step_time_s), band, delta_color="off", delta_arrow="off")
    c[1].metric("Tokens/s", f"{est.tokens_per_s:,.0f}", band, delta_color="off", delta_arrow="off")
    c[2].metric("MFU", format.percent(est.mfu), f"HFU {format.percent(est.hfu)}", delta_color="off", delta_arrow="off")
    c[3].metric("TFLOP/s per GPU", f"{est.model_tflops_per_gpu:,.1f}", "model FLOPs", delta_color="off", delta_arrow="off")
    c[4].metric("Peak memory", format.gib(est.memory.peak_bytes),
                f"of {format.gib(est.usable_bytes, digits=0)} usable", delta_color="off", delta_arrow="off",
                help=f"{est.memory.describe()}; {format.gib(est.capacity_bytes, digits=0)} less the "
                     f"{format.percent(est.memory_margin, digits=0)} safety margin")
    c[5].metric("GPUs", f"{est.num_gpus:,}", help=(plan or est.plan).short())
    if conf is not None:
        st.caption(f"Step time and tokens/s: {conf.text()}. Memory: the model's error on published per-GPU peaks "
                   "(torchtitan's Llama 3.1 runs, paraplan's H200 runs) is in docs/VALIDATION.md, memory section.")


def show_chart(chart: Any, *, where: Any = None, pad_px: int = 110, height: int | None = None) -> None:
    """Draw an Altair chart at its own plot height (or `height`, for concatenated charts) plus room for
    title, axis and legend (Streamlit otherwise squeezes charts to a default height)."""
    own = getattr(chart, "height", None)
    height = height or (own if isinstance(own, int | float) else 260)
    (where or st).altair_chart(chart, width="stretch", height=int(height) + pad_px)
