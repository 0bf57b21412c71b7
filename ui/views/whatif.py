"""What-if: sweep one variable and chart the best plan's throughput and cost; the Pareto front."""

from __future__ import annotations

import streamlit as st

from costmodel import list_gpus
from ui import charts, services, state, urlstate
from ui.format import ui_words
from ui.problem import GBIT
from ui.widgets import confidence_of, problem_caption, show_chart

st.title("What-if")
problem = state.require_problem()
st.caption(problem_caption(problem))
state.require_api("planner.sweep", what="What-if sweeps")

c = problem.cluster
t = problem.training
_COLUMNS = {
    "step_time_s": st.column_config.NumberColumn("step time (s)", format="%.3f s"),
    "tokens_per_s": st.column_config.NumberColumn("tokens/s", format="localized"),
    "mfu": st.column_config.NumberColumn("MFU", format="percent"),
    "memory_gib": st.column_config.NumberColumn("memory/GPU (GiB)", format="%.1f GiB"),
    "capacity_gib": st.column_config.NumberColumn("GPU memory (GiB)", format="%.0f GiB"),
    "model_tflops_per_gpu": st.column_config.NumberColumn("TFLOP/s per GPU", format="%.1f"),
    "search_s": st.column_config.NumberColumn("search (s)", format="%.2f s"),
    "num_gpus": st.column_config.NumberColumn("GPUs", format="localized"),
    "gpu_hours_per_1b_tokens": st.column_config.NumberColumn("GPU-hours per 1B tokens", format="%.1f"),
    "cost_per_1b_tokens": st.column_config.NumberColumn("cost per 1B tokens", format="%.2f"),
}
VARIABLES = {
    "nodes": ("Nodes", lambda: sorted({max(1, c.num_nodes // 4), max(1, c.num_nodes // 2), c.num_nodes,
                                       c.num_nodes * 2})),
    "gpu": ("GPU type", lambda: [g for g in list_gpus() if g != "cpu"][:6]),
    "inter_node_bw": ("Inter-node bandwidth (Gb/s per NIC)",
                      lambda: [round(c.inter_node_link.bw_bytes_per_s / GBIT * f) for f in (0.25, 0.5, 1, 2)]),
    "global_batch": ("Global batch", lambda: sorted({max(1, t.global_batch_size // 2), t.global_batch_size,
                                                     t.global_batch_size * 2})),
    "seq_len": ("Sequence length", lambda: sorted({max(1, t.seq_len // 2), t.seq_len,
                                                   min(problem.model.max_seq_len, t.seq_len * 2)})),
}
if problem.topology_text is not None:  # the uploaded graph fixes the servers and links
    VARIABLES = {k: v for k, v in VARIABLES.items() if k not in ("nodes", "inter_node_bw")}
    st.caption("The uploaded topology graph fixes the node count and the links; sweep another variable.")
ss = st.session_state
if ss.get("whatif_vary") not in VARIABLES:
    ss["whatif_vary"] = next(iter(VARIABLES))
vary = st.selectbox("Vary", list(VARIABLES), format_func=lambda k: VARIABLES[k][0], key="whatif_vary")
default_text = ", ".join(str(v) for v in VARIABLES[vary][1]())
if ss.get("whatif_values") is not None and ss.get("_whatif_values_for") is None:
    ss[f"whatif_values_{vary}"] = ss["whatif_values"]  # a link's values, for the link's variable
ss["_whatif_values_for"] = vary
if f"whatif_values_{vary}" not in ss:
    ss[f"whatif_values_{vary}"] = default_text
raw = st.text_input("Values (comma separated)", key=f"whatif_values_{vary}")
ss["whatif_values"] = raw
if "whatif_price" not in ss or not isinstance(ss["whatif_price"], int | float):
    ss["whatif_price"] = 0.0
price = st.number_input("Price per GPU-hour (0 = show GPU-hours only)", step=0.5, key="whatif_price")
urlstate.publish({"vary": vary, "values": raw if raw != default_text else None, "price": float(price)})
try:
    values = services.parse_sweep_values(vary, raw)
except ValueError as exc:
    st.error(f"Values: {ui_words(str(exc))}")
    st.stop()
if price < 0:
    st.error(f"Price per GPU-hour: {price:g} is negative; use 0 or more.")
    st.stop()

try:
    df = state.sweep(problem, vary=vary, values=values)
except ValueError as exc:
    st.error(f"Sweep: {ui_words(str(exc))}")
    st.stop()

if df.empty or not df["fits"].any():
    st.error("No value of the sweep has a plan that fits.")
else:
    df = services.add_cost(df, price_per_gpu_hour=price)
    fits = df[df["fits"]]
    left, right = st.columns(2)
    order = list(df[vary])  # the table's order (as typed), also for GPU names
    with left:
        show_chart(charts.sweep_chart(fits, x=vary, y="tokens_per_s", y_title="tokens/s (best plan)",
                                      title="Throughput of the best plan", order=order))
    with right:
        cost_col = "cost_per_1b_tokens" if price > 0 else "gpu_hours_per_1b_tokens"
        show_chart(charts.sweep_chart(fits, x=vary, y=cost_col,
                                      y_title="cost per 1B tokens" if price > 0 else "GPU-hours per 1B tokens",
                                      title="Cost of training on 1B tokens", order=order))
    if not df["fits"].all():
        st.warning("No plan fits for: " + ", ".join(str(v) for v in df.loc[~df["fits"], vary]))
    st.dataframe(df, hide_index=True, width="stretch", key="whatif_table", column_config=_COLUMNS)
    conf = confidence_of(problem)
    if conf is not None:
        st.caption(f"Predicted throughput and step times, at the sidebar's problem: {conf.text()}.")

st.subheader("Pareto front")
st.caption("Plans that nothing beats on both step time and memory per GPU (current problem).")
view = state.search(problem) if not services.missing("planner.search") else None
if view is None or not view.fits:
    st.info("No plan fits the current problem, so there is no front to show.")
else:
    show_chart(charts.pareto_chart(view.table, front=view.pareto))
    st.dataframe(view.pareto[["plan", "placement", "step_time_s", "memory_gib", "num_gpus", "tokens_per_s"]],
                 width="stretch", key="pareto_table", column_config=_COLUMNS, hide_index=True)
