"""Session state shared by the pages, and the cached calls (st.cache_data keyed on the specs' JSON).

Re-planning after an input change only re-runs what the change touched: a search result is cached
per (model, cluster, training, constraints) JSON, an estimate per (problem, plan) JSON."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from costmodel import ParallelPlan, Rejection, StepEstimate
from ui import services
from ui.problem import Problem

__all__ = ["set_problem", "problem", "search", "estimate", "selected_label", "select", "TOP_K",
           "require_problem", "require_api", "sweep", "sidebar_problem", "torchrun_script", "topology_frames",
           "current_label", "publish_rank"]

TOP_K = 50
"""Ranked plans a search keeps (the Plan page pages through them)."""

_PROBLEM = "_problem"
_SELECTED = "_selected_plan"


def set_problem(value: Problem | None) -> None:
    st.session_state[_PROBLEM] = value


def problem() -> Problem | None:
    return st.session_state.get(_PROBLEM)


def sidebar_problem() -> Problem | None:
    """Draw the sidebar form; its validated problem (None when an input is wrong, shown inline)."""
    from ui.inputs import problem_sidebar

    value = problem_sidebar()
    set_problem(value)
    return value


def require_problem() -> Problem:
    """Draw the sidebar form; its validated problem, or stop the page pointing at the sidebar's errors."""
    value = sidebar_problem()
    if value is None:
        st.info("Fix the inputs marked in the sidebar to see results.")
        st.stop()
    return value


def require_api(*dotted: str, what: str) -> None:
    """Stop the page with a clear 'not available yet' note when an API it needs has not landed."""
    absent = services.missing(*dotted)
    if absent:
        st.warning(f"{what} is not available yet: this build of paraplan lacks {', '.join(absent)}. "
                   "No result is shown rather than a made-up one.")
        st.stop()


@st.cache_data(show_spinner=False, max_entries=128)
def _search(key: str, top_k: int) -> services.SearchView:
    return services.search_view(Problem.from_key(key), top_k=top_k)


def search(value: Problem, *, top_k: int = TOP_K) -> services.SearchView:
    """The cached search result for a problem."""
    return _search(value.key(), top_k)


@st.cache_data(show_spinner=False, max_entries=256)
def _estimate(key: str, plan_json: str) -> StepEstimate | Rejection:
    return services.estimate_plan(Problem.from_key(key), ParallelPlan.model_validate_json(plan_json))


def estimate(value: Problem, plan: ParallelPlan) -> StepEstimate | Rejection:
    """The cached estimate (with timeline) of one plan."""
    return _estimate(value.key(), plan.model_dump_json())


def selected_label() -> str | None:
    """The label ('#1 dp8-tp8-...') of the plan picked on the Plan page, if any."""
    return st.session_state.get(_SELECTED)


def select(label: str | None) -> None:
    st.session_state[_SELECTED] = label


def current_label(labels: list[str]) -> str:
    """The selected plan among `labels` (the ranked plans' labels): the one picked last, else the rank
    a link names (`?rank=4`), else the best."""
    label = selected_label()
    if label in labels:
        return label
    rank = st.session_state.get("_url_rank")
    if isinstance(rank, int) and 1 <= rank <= len(labels):
        label = labels[rank - 1]
    else:
        label = labels[0]
    select(label)
    return label


def publish_rank(label: str | None) -> None:
    """Put the selected plan's rank into the URL (and keep it for the next page's first run)."""
    from ui import urlstate

    rank = int(label.split()[0].lstrip("#")) if label else None
    st.session_state["_url_rank"] = rank
    urlstate.publish({"rank": rank})


@st.cache_data(show_spinner=False, max_entries=64)
def _sweep(key: str, vary: str, values_json: str) -> pd.DataFrame:
    return services.sweep_frame(Problem.from_key(key), vary=vary, values=json.loads(values_json))


def sweep(value: Problem, *, vary: str, values: list) -> pd.DataFrame:
    """The cached what-if sweep (best plan per value)."""
    return _sweep(value.key(), vary, json.dumps(values))


@st.cache_data(show_spinner=False, max_entries=64)
def _torchrun(key: str, plan_json: str) -> str:
    return services.torchrun_command(Problem.from_key(key), ParallelPlan.model_validate_json(plan_json))


def torchrun_script(value: Problem, plan: ParallelPlan) -> str:
    """The cached launch script (torchrun command) of a plan on the problem's cluster."""
    return _torchrun(value.key(), plan.model_dump_json())


@st.cache_data(show_spinner=False, max_entries=64)
def _topology_frames(key: str, plan_json: str, axis: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    from costmodel.network.topology import build_topology
    from ui.topology_view import topology_frames as frames

    value = Problem.from_key(key)
    topo = value.topology() or build_topology(value.cluster)
    return frames(topo, ParallelPlan.model_validate_json(plan_json), axis)


def topology_frames(value: Problem, plan: ParallelPlan, axis: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cached nodes/edges of the topology view of one plan's `axis` groups."""
    return _topology_frames(value.key(), plan.model_dump_json(), axis)
