"""Run: train the selected plan for real on this machine (scaled to it), live, then predicted vs measured."""

from __future__ import annotations

import tempfile

import pandas as pd
import streamlit as st

from costmodel import ParallelPlan, save_plan
from ui import charts, jobs, runs, services, state
from ui.widgets import show_chart

st.title("Run")
st.caption("Runs a plan with the executor (`paraplan run`: torchrun, Gloo on CPU, NCCL on GPUs) on this "
           "machine, scaled down to it, with a small catalog model; then compares the measurement with "
           "the cost model's prediction for the same run.")
if "run" not in services.cli_subcommands():
    st.warning("Running plans is not available yet: this build's `paraplan` has no `run` subcommand "
               "(executor launch API). Nothing is run or shown rather than a made-up result.")
    st.stop()

job: jobs.Job | None = st.session_state.get("_run_job")
source = st.radio("Plan", ["Selected plan, scaled to this machine", "Custom plan"], horizontal=True,
                  key="run_source")
problem = state.sidebar_problem()
plan: ParallelPlan | None = None
if source.startswith("Selected"):
    if problem is None or services.missing("planner.search"):
        st.info("Fix the planning inputs in the sidebar, or use a custom plan.")
    else:
        view = state.search(problem)
        if not view.fits:
            st.info("No plan fits the sidebar's problem; use a custom plan.")
        else:
            labels = [r.label for r in view.ranked]
            label = state.selected_label()
            plan = view.by_label(label if label in labels else labels[0]).plan
            plan = plan.model_copy(update={"layers_per_stage": None})  # that split was for the big model
            st.caption(f"{'Selected' if label in labels else 'Best'} plan for the sidebar's problem: {plan.short()} "
                       f"({plan.world_size} GPUs); the executor scales it to the processes below and says what it "
                       "changed.")
else:
    c = st.columns(4)
    knobs = {k: int(c[i].number_input(k, 1, 8, 2 if k == "dp" else 1, key=f"run_{k}"))
             for i, k in enumerate(("dp", "tp", "pp", "micro_batch_size"))}
    try:
        plan = ParallelPlan(**knobs)
    except ValueError as exc:
        st.error(f"Plan: {exc}")

c = st.columns(4)
model = c[0].selectbox("Model", runs.LOCAL_MODELS, key="run_model")
steps = int(c[1].number_input("Steps", 1, 1000, 20, key="run_steps"))
procs = int(c[2].number_input("Processes", 1, 64, runs.default_procs(), key="run_procs"))
global_batch = int(c[3].number_input("Global batch", 1, 4096, 8, key="run_global_batch"))
compile_blocks = st.toggle("Compile blocks (torch.compile)", value=runs.compile_default(), key="run_compile",
                           help="Compile each Transformer block with inductor (on by default on GPUs; on this "
                                "machine's CPUs the first step then spends ~30 s compiling).")

with st.expander("Run it on a cluster instead: Slurm script, Kubernetes manifest, Ray driver or torchrun script"):
    # the executor's launchers (paraplan launch): the plan as chosen above, unscaled, sized to the sidebar's cluster
    c2 = st.columns(3)
    target = c2[0].selectbox("Launcher", ["slurm", "kubernetes", "ray", "torchrun"], key="run_launch_target")
    pvc = c2[1].text_input("Kubernetes volume claim (run directory)", "paraplan-runs", key="run_launch_pvc")
    if c2[2].button("Build launch file", disabled=plan is None, key="run_launch_build") and plan is not None:
        from costmodel import list_models
        from executor.launch import prepare_launch, render_launch

        big = source.startswith("Selected") and problem is not None
        try:
            spec = prepare_launch(plan, on=target, model=problem.model.name if big and problem.model.name in
                                  list_models() else problem.model if big else model, steps=steps,
                                  cluster=problem.cluster if problem is not None else "cpu",
                                  global_batch=problem.training.global_batch_size if big else global_batch,
                                  seq_len=problem.training.seq_len if big else None, rdzv_host="$MASTER_ADDR",
                                  pvc=pvc or None)
            st.session_state["_launch_file"] = render_launch(spec)
        except ValueError as exc:
            st.session_state.pop("_launch_file", None)
            st.error(f"Launch: {exc}")
    launch_file = st.session_state.get("_launch_file")
    if launch_file is not None:
        st.download_button(f"Download {launch_file.file_name}", launch_file.text, file_name=launch_file.file_name,
                           mime=launch_file.mime, key="dl_launch")
        st.caption(f"Then: `{launch_file.usage}`")

start = st.button("Start run", type="primary", disabled=plan is None or (job is not None and job.running),
                  key="run_start")
if start and plan is not None:
    out = tempfile.mkdtemp(prefix="paraplan-run-")
    try:  # the executor's own checks (plan vs model, machine capacity, scaling) before any process starts
        changes = runs.check_run(plan, model=model, steps=steps, procs=procs, global_batch=global_batch, out=out)
    except ValueError as exc:
        st.error(f"Run: {exc}")
    else:
        st.session_state["_run_changes"] = changes
        plan_path = save_plan(plan, f"{out}/plan.json")
        argv = runs.run_argv(plan_path, model=model, steps=steps, procs=procs, global_batch=global_batch, out=out,
                             compile=compile_blocks)
        job = jobs.start_job(argv, out_dir=out)
        st.session_state["_run_job"] = job
        st.session_state["_run_steps"] = steps


@st.fragment(run_every=1.0)
def _progress() -> None:
    current: jobs.Job | None = st.session_state.get("_run_job")
    if current is None:
        return
    total = st.session_state.get("_run_steps", 1)
    metrics = jobs.read_metrics(current.out_dir / "metrics.jsonl")
    done = int(metrics["step"].max()) if not metrics.empty else 0
    status = "running" if current.running else f"finished (exit {current.returncode})"
    st.progress(min(done / max(total, 1), 1.0), text=f"{status}: step {done} of {total}, "
                                                      f"{current.elapsed_s:.0f} s")
    for change in st.session_state.get("_run_changes", ()):
        st.caption(f"Scaled to this machine: {change}")
    if current.running and st.button("Stop", key="run_stop"):
        current.stop()
    if not metrics.empty:
        left, right = st.columns(2)
        if "loss" in metrics:
            show_chart(charts.run_chart(metrics, y="loss", title="Loss per step"), where=left)
        if "tokens_per_s" in metrics:
            show_chart(charts.run_chart(metrics, y="tokens_per_s", title="Tokens/s per step"), where=right)
    if not current.running:
        _finished(current)
    with st.expander("Log"):
        st.code(current.log_tail() or "(no output yet)")


def _finished(current: jobs.Job) -> None:
    summary = jobs.read_json(current.out_dir / "summary.json")
    if current.returncode != 0 or summary is None:
        st.error(f"The run failed (exit {current.returncode}); see the log below.")
        return
    profile_path = st.session_state.get("_calibration_profile")
    try:
        calibration = None
        if profile_path:
            from costmodel.calibration.profile_spec import load_profile

            calibration = load_profile(profile_path)
            st.caption(f"Predicted with the calibration profile measured on the Calibrate page ({profile_path}).")
        measured, predicted = runs.compare(summary, calibration=calibration)
    except ValueError as exc:
        st.error(f"Prediction: {exc}")
        return
    st.subheader("Predicted vs measured")
    rows = runs.comparison_rows(measured, predicted)
    show_chart(charts.predicted_vs_measured_chart(pd.DataFrame(rows), title=measured.plan.short()))
    st.dataframe(runs.comparison_table(measured, predicted), hide_index=True, key="run_compare")


_progress()
