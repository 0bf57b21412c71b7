"""Plan: the best plans for the sidebar's problem, ranked, with rejections and the no-fit message."""

from __future__ import annotations

import streamlit as st

from ui import charts, state
from ui.widgets import human_count, problem_caption, show_chart

st.title("Plan")
problem = state.require_problem()
st.caption(problem_caption(problem))
state.require_api("planner.search", what="Planning")

try:
    with st.spinner(f"Searching plans for {problem.model.name} on {problem.cluster.num_gpus} GPUs..."):
        view = state.search(problem)
except ValueError as exc:  # a constraint the planner refuses (names the field)
    st.error(f"Search: {exc}")
    st.stop()

if not view.fits:
    st.error(f"**No plan fits.** {view.message}")
else:
    best = view.ranked[0].estimate
    c = st.columns(5)
    c[0].metric("Best tokens/s", human_count(best.tokens_per_s))
    c[1].metric("MFU", f"{best.mfu:.1%}")
    c[2].metric("Step time", f"{best.step_time_s:.3f} s")
    c[3].metric("Memory per GPU", f"{best.memory.peak_bytes / charts.GIB:.1f} GiB",
                f"{(best.usable_bytes - best.memory.peak_bytes) / charts.GIB:.1f} GiB free "
                f"({best.memory_margin:.0%} kept as margin)", delta_color="off")
    c[4].metric("Search", f"{view.elapsed_s * 1e3:.0f} ms",
                f"{human_count(view.evaluated)} plans" if view.evaluated else None, delta_color="off")

    st.subheader("Ranked plans")
    st.caption("Click a column header to sort; select a row to inspect it on Plan detail.")
    table = view.table.reset_index()
    event = st.dataframe(
        table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
        key="plan_table",
        column_config={
            "rank": st.column_config.NumberColumn("rank", width="small"),
            "mfu": st.column_config.ProgressColumn("MFU", format="percent", min_value=0.0, max_value=1.0),
            "tokens_per_s": st.column_config.NumberColumn("tokens/s", format="%.0f"),
            "step_time_s": st.column_config.NumberColumn("step time (s)", format="%.3f"),
            "memory_gib": st.column_config.NumberColumn("memory/GPU (GiB)", format="%.1f"),
            "headroom_gib": st.column_config.NumberColumn("headroom (GiB)", format="%.1f"),
        },
    )
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    if rows:
        state.select(view.ranked[rows[0]].label)
    labels = [r.label for r in view.ranked]
    current = state.selected_label()
    picked = st.selectbox("Selected plan", labels, index=labels.index(current) if current in labels else 0,
                          key="plan_pick")
    state.select(picked)
    st.page_link("views/detail.py", label=f"Inspect {picked} on Plan detail", icon=":material/insights:")

    left, right = st.columns(2)
    show_chart(charts.pareto_chart(view.table, front=view.pareto), where=left)
    if view.rejections.empty:
        right.caption("No candidate plan was rejected.")
    else:
        show_chart(charts.rejections_chart(view.rejections), where=right)

if not view.fits and not view.rejections.empty:
    show_chart(charts.rejections_chart(view.rejections))
    st.dataframe(view.rejections, hide_index=True, width="stretch")
