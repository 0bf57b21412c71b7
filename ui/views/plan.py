"""Plan: the best plans for the sidebar's problem, ranked and paged, with rejections and the no-fit message.

Selecting a row of the table (or picking in "Selected plan") selects that plan for Plan detail, Compare
and Run, and puts its rank in the URL."""

from __future__ import annotations

import math

import streamlit as st

from ui import charts, format, state, urlstate
from ui.format import ui_words
from ui.widgets import confidence_of, equivalence_info, human_count, problem_caption, show_chart

PAGE_ROWS = 10

st.title("Plan")
problem = state.require_problem()
st.caption(problem_caption(problem))
state.require_api("planner.search", what="Planning")

try:
    with st.spinner(f"Searching plans for {problem.model.name} on {problem.cluster.num_gpus:,} GPUs..."):
        view = state.search(problem)
except ValueError as exc:  # a constraint the planner refuses (names the field)
    st.error(f"Search: {ui_words(str(exc))}")
    st.stop()

if not view.fits:
    st.error(f"**No plan fits.** {ui_words(view.message or '')}")
else:
    best = view.ranked[0].estimate
    conf = confidence_of(problem, best.num_gpus)
    band = conf.short() if conf is not None else None
    c = st.columns(5)
    c[0].metric("Best tokens/s", f"{best.tokens_per_s:,.0f}", band, delta_color="off", delta_arrow="off")
    c[1].metric("Step time", format.seconds(best.step_time_s), band, delta_color="off", delta_arrow="off")
    c[2].metric("MFU", format.percent(best.mfu), f"{best.model_tflops_per_gpu:,.1f} TFLOP/s per GPU",
                delta_color="off", delta_arrow="off")
    c[3].metric("Memory per GPU", format.gib(best.memory.peak_bytes),
                f"{format.gib(best.capacity_bytes - best.memory.peak_bytes)} free", delta_color="off", delta_arrow="off")
    c[4].metric("Search", format.seconds(view.elapsed_s),
                f"{human_count(view.evaluated)} plans" if view.evaluated else None, delta_color="off", delta_arrow="off")
    if conf is not None:
        st.caption(f"Predicted step time and throughput: {conf.text()}.")

    st.subheader("Ranked plans")
    labels = [r.label for r in view.ranked]
    pages = max(1, math.ceil(len(labels) / PAGE_ROWS))
    ss = st.session_state
    if not isinstance(ss.get("plan_page"), int) or not 1 <= ss["plan_page"] <= pages:
        ss["plan_page"] = 1
    page = st.segmented_control(
        "Plans", list(range(1, pages + 1)), key="plan_page", selection_mode="single",
        format_func=lambda p: f"{(p - 1) * PAGE_ROWS + 1}-{min(p * PAGE_ROWS, len(labels))}",
        help=f"The {len(labels)} fastest plans that fit, {PAGE_ROWS} per page.") or 1
    first = (page - 1) * PAGE_ROWS
    table = view.table.reset_index().iloc[first:first + PAGE_ROWS].reset_index(drop=True)
    st.caption("Select a row to make it the selected plan (Plan detail, Compare and Run follow it). 'same as' "
               "lists other placements folded into a row because they change no figure.")
    event = st.dataframe(
        table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
        key=f"plan_table_{page}" if page > 1 else "plan_table",
        column_config={
            "rank": st.column_config.NumberColumn("rank", width="small"),
            "plan": st.column_config.TextColumn("plan", width="large"),
            "placement": st.column_config.TextColumn("placement", help="mesh axes, innermost (fastest links) first"),
            "same_as": st.column_config.TextColumn("same as", help="other placements with the same figures"),
            "step_time_s": st.column_config.NumberColumn("step time (s)", format="%.3f s"),
            "tokens_per_s": st.column_config.NumberColumn("tokens/s", format="localized"),
            "mfu": st.column_config.NumberColumn("MFU", format="percent"),
            "tflops_per_gpu": st.column_config.NumberColumn("TFLOP/s per GPU", format="%.1f"),
            "memory_gib": st.column_config.NumberColumn("memory/GPU (GiB)", format="%.1f GiB"),
            "headroom_gib": st.column_config.NumberColumn("headroom (GiB)", format="%.1f GiB"),
            "num_gpus": st.column_config.NumberColumn("GPUs", format="localized"),
        },
    )
    rows = list(event.selection.rows) if event is not None and hasattr(event, "selection") else []
    table_pick = labels[first + rows[0]] if rows and first + rows[0] < len(labels) else None
    if table_pick is not None and table_pick != ss.get("_table_pick"):
        state.select(table_pick)  # a new row selected in the table: it becomes the selected plan
    ss["_table_pick"] = table_pick
    current = state.current_label(labels)
    ss["plan_pick"] = current

    def _picked() -> None:
        state.select(ss["plan_pick"])

    picked = st.selectbox("Selected plan", labels, key="plan_pick", on_change=_picked)
    state.select(picked)
    state.publish_rank(picked)
    urlstate.publish({"table_page": page})
    equivalence_info(view.by_label(picked))
    st.page_link("views/detail.py", label=f"Inspect {picked} on Plan detail", icon=":material/insights:",
                 query_params={**st.query_params.to_dict()})

    left, right = st.columns(2)
    show_chart(charts.pareto_chart(view.table, front=view.pareto), where=left)
    if view.rejections.empty:
        right.caption("No candidate plan was rejected.")
    else:
        show_chart(charts.rejections_chart(view.rejections), where=right)

if not view.fits and not view.rejections.empty:
    show_chart(charts.rejections_chart(view.rejections))
    st.dataframe(view.rejections, hide_index=True, width="stretch",
                 column_config={"plans": st.column_config.NumberColumn("plans", format="localized")})
