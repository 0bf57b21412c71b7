"""Plan detail: why a plan wins - timeline, time and memory breakdowns, topology, downloads."""

from __future__ import annotations

import streamlit as st

from costmodel import Rejection
from ui import charts, services, state
from ui.topology_view import topology_chart
from ui.widgets import estimate_metrics, pick_plan, problem_caption, ranked_or_stop, show_chart

st.title("Plan detail")
problem = state.require_problem()
st.caption(problem_caption(problem))
view = ranked_or_stop(problem)
ranked = pick_plan(view, key="detail_pick", label="Plan to inspect")
plan = ranked.plan
try:
    est = state.estimate(problem, plan)
except ValueError as exc:
    st.error(f"Estimate: {exc}")
    st.stop()
estimate_metrics(est, plan=plan)
if isinstance(est, Rejection):
    st.stop()

st.subheader("Pipeline timeline")
if est.timeline:
    show_chart(charts.gantt_chart(est.timeline))
    st.caption("Simulated events of one step per pipeline rank (forward, backward, communication), "
               "micro-batch numbers on the bars.")
else:
    st.info("This estimate carries no timeline events (the cost model returned none for this plan).")

left, right = st.columns(2)
with left:
    show_chart(charts.time_breakdown_chart(est.time))
    df = charts.time_breakdown_frame(est.time)
    st.dataframe(df, hide_index=True, width="stretch", key="time_table",
                 column_config={"seconds": st.column_config.NumberColumn(format="%.4f"),
                                "share": st.column_config.NumberColumn(format="percent")})
with right:
    show_chart(charts.memory_chart(est))
    mem = est.memory
    st.caption(f"Most loaded GPU: parameters {mem.parameters_bytes / charts.GIB:.1f} GiB, gradients "
               f"{mem.gradients_bytes / charts.GIB:.1f} GiB, optimizer {mem.optimizer_bytes / charts.GIB:.1f} GiB, "
               f"activations {mem.activations_bytes / charts.GIB:.1f} GiB, buffers "
               f"{mem.buffers_bytes / charts.GIB:.1f} GiB; peak {mem.peak_bytes / charts.GIB:.1f} of "
               f"{est.capacity_bytes / charts.GIB:.0f} GiB.")

st.subheader("Topology: the plan's groups and link load")
if services.missing("costmodel.network.topology.build_topology", "costmodel.network.placement.axis_groups"):
    st.warning("The topology view is not available yet (costmodel.network.topology / costmodel.network.placement missing).")
else:
    axes = [a for a in ("tp", "cp", "ep", "dp", "pp") if getattr(plan, a) > 1] or ["dp"]
    axis = st.radio("Communication of", axes, horizontal=True, key="topo_axis",
                    format_func=lambda a: f"{a} (degree {getattr(plan, a)})")
    try:
        nodes, edges = state.topology_frames(problem, plan, axis)
        show_chart(topology_chart(nodes, edges, title=f"{axis} groups on {problem.cluster.name}"))
        busiest = int(edges["flows"].max()) if not edges.empty else 0
        st.caption(f"Servers holding {axis} group 0 (up to 4) and the network above them. Edge colour: "
                   f"concurrent {axis} flows on the link (busiest: {busiest}); each flow gets 1/flows of it.")
    except ValueError as exc:
        st.error(f"Topology: {exc}")

st.subheader("Downloads")
c = st.columns(3)
c[0].download_button("Plan JSON", plan.model_dump_json(indent=2), file_name=f"{plan.short()}.json",
                     mime="application/json", key="dl_plan")
c[1].download_button("Chrome trace", est.chrome_trace_json(), file_name=f"{plan.short()}.trace.json",
                     mime="application/json", key="dl_trace", disabled=not est.timeline,
                     help="Open in chrome://tracing or ui.perfetto.dev")
if not services.has_module("executor.launch"):
    c[2].caption("torchrun command: not available yet (executor.launch missing).")
else:
    # building it checks the plan against the model in the executor (builds it on the meta device:
    # seconds for a large model), so it is built on request
    wanted = (problem.key(), plan.model_dump_json())
    if c[2].button("Build torchrun command", key="build_cmd"):
        st.session_state["_cmd_for"] = wanted
    if st.session_state.get("_cmd_for") == wanted:
        try:
            with st.spinner("Checking the plan with the executor..."):
                script = state.torchrun_script(problem, plan)
        except ValueError as exc:
            st.error(f"torchrun command: {exc}")
        else:
            c[2].download_button("torchrun command", script, file_name=f"run-{plan.short()}.sh",
                                 mime="text/x-sh", key="dl_cmd")
            st.code(script, language="bash")
