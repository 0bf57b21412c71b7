"""Plan detail: why a plan wins - timeline, time and memory breakdowns, topology, downloads."""

from __future__ import annotations

import streamlit as st

from costmodel import Rejection
from ui import charts, format, services, state, urlstate
from ui.format import ui_words
from ui.topology_view import legend_px, topology_chart
from ui.widgets import (
    equivalence_info,
    estimate_metrics,
    pick_plan,
    problem_caption,
    ranked_or_stop,
    show_chart,
)

st.title("Plan detail")
problem = state.require_problem()
st.caption(problem_caption(problem))
view = ranked_or_stop(problem)
ranked = pick_plan(view, key="detail_pick", label="Plan to inspect")
plan = ranked.plan
try:
    est = state.estimate(problem, plan)
except ValueError as exc:
    st.error(f"Estimate: {ui_words(str(exc))}")
    st.stop()
st.caption(f"**{ranked.label}** · placement (mesh axes, innermost first): **{'-'.join(plan.placement)}**.")
equivalence_info(ranked)
estimate_metrics(est, plan=plan, problem=problem)
if isinstance(est, Rejection):
    st.stop()

st.subheader("Pipeline timeline")
if est.timeline:
    show_chart(charts.gantt_chart(est.timeline))
    st.caption(charts.timeline_caption(est.timeline))
else:
    st.info("This estimate carries no timeline events (the cost model returned none for this plan).")

left, right = st.columns(2)
with left:
    show_chart(charts.time_breakdown_chart(est.time))
    df = charts.time_breakdown_frame(est.time)
    st.dataframe(df, hide_index=True, width="stretch", key="time_table",
                 column_config={"seconds": st.column_config.NumberColumn("time (s)", format="%.4f s"),
                                "share": st.column_config.NumberColumn(format="percent")})
with right:
    show_chart(charts.memory_chart(est))
    mem = est.memory
    st.caption(f"Most loaded GPU: parameters {format.gib(mem.parameters_bytes)}, gradients "
               f"{format.gib(mem.gradients_bytes)}, optimizer {format.gib(mem.optimizer_bytes)}, "
               f"activations {format.gib(mem.activations_bytes)}, buffers {format.gib(mem.buffers_bytes)}; "
               f"peak {format.gib(mem.peak_bytes)} of {format.gib(est.capacity_bytes, digits=0)}.")

st.subheader("Topology: the plan's groups and link load")
if services.missing("costmodel.network.topology.build_topology", "costmodel.network.placement.axis_groups"):
    st.warning("The topology view is not available yet (costmodel.network.topology / costmodel.network.placement missing).")
else:
    axes = [a for a in ("tp", "cp", "ep", "dp", "pp") if getattr(plan, a) > 1] or ["dp"]
    if st.session_state.get("topo_axis") not in axes:
        st.session_state["topo_axis"] = axes[0]
    axis = st.radio("Communication of", axes, horizontal=True, key="topo_axis",
                    format_func=lambda a: f"{a} (degree {getattr(plan, a)})")
    urlstate.publish({"axis": axis if axis != axes[0] else None})
    try:
        nodes, edges = state.topology_frames(problem, plan, axis)
        show_chart(topology_chart(nodes, edges, title=f"{axis} groups on {problem.cluster.name}"),
                   pad_px=110 + legend_px(nodes))
        busiest = int(edges["flows"].max()) if not edges.empty else 0
        st.caption(f"Servers holding {axis} group 0 (up to 4) and the network above them. Node colour: the "
                   f"{axis} group of each GPU (one legend entry per group drawn); grey GPUs are idle, dark squares "
                   f"are switches (inside a server: NVSwitch/PCIe; above: leaf/spine), brown diamonds are NICs. "
                   f"Edge colour: concurrent {axis} flows on the link (busiest: {busiest}); each flow gets "
                   f"1/flows of it.")
    except ValueError as exc:
        st.error(f"Topology: {ui_words(str(exc))}")

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
            st.error(f"torchrun command: {ui_words(str(exc))}")
        else:
            c[2].download_button("torchrun command", script, file_name=f"run-{plan.short()}.sh",
                                 mime="text/x-sh", key="dl_cmd")
            st.code(script, language="bash")
