"""What-if: sweep one variable and chart the best plan's throughput and cost; the Pareto front."""

from __future__ import annotations

import streamlit as st

from costmodel import list_gpus
from ui import charts, services, state
from ui.problem import GBIT
from ui.widgets import problem_caption, show_chart

st.title("What-if")
problem = state.require_problem()
st.caption(problem_caption(problem))
state.require_api("planner.sweep", what="What-if sweeps")

c = problem.cluster
t = problem.training
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
vary = st.selectbox("Vary", list(VARIABLES), format_func=lambda k: VARIABLES[k][0], key="whatif_vary")
default_values = VARIABLES[vary][1]()
raw = st.text_input("Values (comma separated)", ", ".join(str(v) for v in default_values),
                    key=f"whatif_values_{vary}")
try:
    values = services.parse_sweep_values(vary, raw)
except ValueError as exc:
    st.error(f"Values: {exc}")
    st.stop()
price = st.number_input("Price per GPU-hour (0 = show GPU-hours only)", min_value=0.0, value=0.0, step=0.5,
                        key="whatif_price")

try:
    df = state.sweep(problem, vary=vary, values=values)
except ValueError as exc:
    st.error(f"Sweep: {exc}")
    st.stop()

if df.empty or not df["fits"].any():
    st.error("No value of the sweep has a plan that fits.")
else:
    df = services.add_cost(df, price_per_gpu_hour=price)
    fits = df[df["fits"]]
    left, right = st.columns(2)
    with left:
        show_chart(charts.sweep_chart(fits, x=vary, y="tokens_per_s", y_title="tokens/s (best plan)",
                                      title="Throughput of the best plan"))
    with right:
        cost_col = "cost_per_1b_tokens" if price > 0 else "gpu_hours_per_1b_tokens"
        show_chart(charts.sweep_chart(fits, x=vary, y=cost_col,
                                      y_title="cost per 1B tokens" if price > 0 else "GPU-hours per 1B tokens",
                                      title="Cost of training on 1B tokens"))
    if not df["fits"].all():
        st.warning("No plan fits for: " + ", ".join(str(v) for v in df.loc[~df["fits"], vary]))
    st.dataframe(df, hide_index=True, width="stretch", key="whatif_table")

st.subheader("Pareto front")
st.caption("Plans that nothing beats on both step time and memory per GPU (current problem).")
view = state.search(problem) if not services.missing("planner.search") else None
if view is None or not view.fits:
    st.info("No plan fits the current problem, so there is no front to show.")
else:
    show_chart(charts.pareto_chart(view.table, front=view.pareto))
    st.dataframe(view.pareto[["plan", "step_time_s", "memory_gib", "num_gpus", "tokens_per_s"]],
                 width="stretch", key="pareto_table")
