"""Run: train the selected plan for real on this machine (scaled to it), live; then predicted vs measured
(the closed loop's own prediction), the measured step under the simulated one, and the history of runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from costmodel import ParallelPlan, load_model, save_plan
from ui import jobs, runs, services, state, urlstate
from ui.fields import kept, number
from ui.format import ui_words
from ui.run_view import overlay_runs, show_run

st.title("Run")
root = runs.runs_root()
st.caption("Trains a plan with the executor (`paraplan run`: torchrun, Gloo on CPU, NCCL on GPUs) on this machine, "
           "scaled down to it, with a small catalog model; then compares the measurement with the prediction "
           "`paraplan validate --local` makes for the same run (this machine's profile, measured once per model "
           f"and process count). Runs are kept in `{root}`.")
if "run" not in services.cli_subcommands():
    st.warning("Running plans is not available yet: this build's `paraplan` has no `run` subcommand "
               "(executor launch API). Nothing is run or shown rather than a made-up result.")
    st.stop()

ss = st.session_state
job: jobs.Job | None = ss.get("_run_job")
problem = state.sidebar_problem()
source = kept(st.radio, "Plan", ["selected", "custom"], horizontal=True, key="run_source", default="selected",
              format_func=lambda s: {"selected": "Selected plan, scaled to this machine", "custom": "Custom plan"}[s])
plan: ParallelPlan | None = None
plan_label = ""
if source == "selected":
    if problem is None or services.missing("planner.search"):
        st.info("Fix the planning inputs in the sidebar, or use a custom plan.")
    else:
        view = state.search(problem)
        if not view.fits:
            st.info("No plan fits the sidebar's problem; use a custom plan.")
        else:
            labels = [r.label for r in view.ranked]
            plan_label = state.current_label(labels)
            state.publish_rank(plan_label)
            plan = view.by_label(plan_label).plan.model_copy(update={"layers_per_stage": None})  # for the big model
            st.caption(f"Selected plan for the sidebar's problem: **{plan_label}** ({plan.world_size:,} GPUs, placement "
                       f"{'-'.join(plan.placement)}); the executor scales it to the processes below and says what it "
                       "changed.")
else:
    c = st.columns(4)
    knobs = {k: number(c[i], k.replace("micro_batch_size", "micro-batch"), key=f"run_{k}", default=2 if k == "dp" else 1,
                       limits=(1, 64)) for i, k in enumerate(("dp", "tp", "pp", "micro_batch_size"))}
    if None not in knobs.values():
        try:
            plan = ParallelPlan(**knobs)
            plan_label = f"custom {plan.short()}"
        except ValueError as exc:
            st.error(f"Plan: {ui_words(str(exc))}")

c = st.columns(5)
model = kept(c[0].selectbox, "Model", runs.LOCAL_MODELS, key="run_model", default="tiny-llama")
max_seq = load_model(model).max_seq_len
steps = number(c[1], "Steps", key="run_steps", default=20, limits=(2, 1000))
procs = number(c[2], "Processes", key="run_procs", default=runs.default_procs(), limits=(1, 64))
global_batch = number(c[3], "Global batch", key="run_global_batch", default=8, limits=(1, 4096))
seq_len = number(c[4], "Sequence length", key="run_seq_len", default=min(max_seq, 128), limits=(1, max_seq))
trace = st.checkbox("Record a profiler trace of the last step (shown under the simulated timeline)", value=True,
                    key="run_trace")
compile_blocks = st.toggle("Compile blocks (torch.compile)", value=runs.compile_default(), key="run_compile",
                           help="Compile each Transformer block with inductor (on by default on GPUs; on this "
                                "machine's CPUs the first step then spends ~30 s compiling).")
urlstate.publish({"run_from": source, "run_model": model, "steps": steps, "procs": procs, "run_batch": global_batch,
                  "run_seq": seq_len, **({f"run_{k}": ss.get(f"run_{k}") for k in ("dp", "tp", "pp", "micro_batch_size")}
                                         if source == "custom" else {})})
ready = plan is not None and None not in (steps, procs, global_batch, seq_len)
profile = runs.profile_path(root, model, procs or 1)
reprofile = st.checkbox(f"Measure this machine again before the run (kept: {profile.name})", value=False,
                        key="run_reprofile", disabled=not profile.is_file())

if st.button("Start run", type="primary", disabled=not ready or (job is not None and job.running), key="run_start"):
    try:  # the executor's own checks (plan vs model, machine capacity, scaling) before any process starts
        changes = runs.check_run(plan, model=model, steps=steps, procs=procs, global_batch=global_batch,
                                 seq_len=seq_len, out=root / "_check")
    except ValueError as exc:
        st.error(f"Run: {ui_words(str(exc))}")
    else:
        out = runs.new_run_dir(root, model=model, plan=plan)
        plan_path = save_plan(plan, out / "requested_plan.json")
        commands = []
        if reprofile or not profile.is_file():
            profile.parent.mkdir(parents=True, exist_ok=True)
            commands.append(runs.profile_argv(profile, model=model, procs=procs))
        commands.append(runs.run_argv(plan_path, model=model, steps=steps, procs=procs, global_batch=global_batch,
                                      seq_len=seq_len, out=out, trace_step=runs.TRACE_STEP_LAST if trace else 0,
                                      compile=compile_blocks))
        runs.write_request(out, {"model": model, "steps": steps, "procs": procs, "global_batch": global_batch,
                                 "seq_len": seq_len, "plan_label": plan_label, "source": source,
                                 "problem": problem.model.name if problem is not None else None,
                                 "profile": str(profile), "changes": list(changes)})
        ss["_run_job"] = jobs.start_job(runs.job_argv(*commands), out_dir=out)
        ss["_run_steps"] = steps
        ss["_run_profiling"] = len(commands) > 1
        ss["_url_runs"] = [out.name]

with st.expander("Run it on a cluster instead: Slurm script, Kubernetes manifest, Ray driver or torchrun script"):
    # the executor's launchers (paraplan launch): the plan as chosen above, unscaled, sized to the sidebar's cluster
    c2 = st.columns(3)
    target = c2[0].selectbox("Launcher", ["slurm", "kubernetes", "ray", "torchrun"], key="run_launch_target")
    pvc = c2[1].text_input("Kubernetes volume claim (run directory)", "paraplan-runs", key="run_launch_pvc")
    if c2[2].button("Build launch file", disabled=plan is None, key="run_launch_build") and plan is not None:
        from costmodel import list_models
        from executor.launch import prepare_launch, render_launch

        big = source == "selected" and problem is not None
        try:
            spec = prepare_launch(plan, on=target, model=problem.model.name if big and problem.model.name in
                                  list_models() else problem.model if big else model, steps=steps or 1,
                                  cluster=problem.cluster if problem is not None else "cpu",
                                  global_batch=problem.training.global_batch_size if big else global_batch,
                                  seq_len=problem.training.seq_len if big else None, rdzv_host="$MASTER_ADDR",
                                  pvc=pvc or None)
            ss["_launch_file"] = render_launch(spec)
        except ValueError as exc:
            ss.pop("_launch_file", None)
            st.error(f"Launch: {ui_words(str(exc))}")
    launch_file = ss.get("_launch_file")
    if launch_file is not None:
        st.download_button(f"Download {launch_file.file_name}", launch_file.text, file_name=launch_file.file_name,
                           mime=launch_file.mime, key="dl_launch")
        st.caption(f"Then: `{launch_file.usage}`")


@st.fragment(run_every=1.0)
def _progress() -> None:
    current: jobs.Job | None = ss.get("_run_job")
    if current is None:
        return
    total = ss.get("_run_steps", 1)
    metrics = jobs.read_metrics(current.out_dir / "metrics.jsonl")
    done = int(metrics["step"].max()) if not metrics.empty else 0
    if current.running and ss.get("_run_profiling") and metrics.empty:
        status = "profiling this machine first (once per model and process count)"
    else:
        status = "running" if current.running else f"finished (exit {current.returncode})"
    st.progress(min(done / max(total, 1), 1.0), text=f"{current.out_dir.name}: {status}, step {done} of {total}, "
                                                      f"{current.elapsed_s:.0f} s")
    if current.running:
        if st.button("Stop", key="run_stop"):
            current.stop()
        if not metrics.empty:
            overlay_runs([current.out_dir], key="live")
    elif current.returncode != 0:
        st.error(f"The run failed (exit {current.returncode}); its log is below and in {current.out_dir / 'job.log'}.")
    with st.expander("Log"):
        st.code(current.log_tail() or "(no output yet)")
    if not current.running and not ss.get("_run_done_rerun") == current.out_dir.name:
        ss["_run_done_rerun"] = current.out_dir.name
        st.rerun()  # the history below picks the finished run up


_progress()

st.header("Runs")
history = runs.list_runs(root)
if not history:
    st.info(f"No runs in {root} yet.")
    st.stop()
names = [r.name for r in history]
wanted = [n for n in (ss.get("_url_runs") or []) if n in names]
if wanted or "run_pick" not in ss or not set(ss["run_pick"]) <= set(names):
    ss["run_pick"] = wanted or names[:1]
ss["_url_runs"] = None
picked = st.multiselect("Runs to show (several: their curves overlaid)", names, key="run_pick")
urlstate.publish({"runs": picked})

table = pd.DataFrame([r.row() for r in history])
st.dataframe(table, hide_index=True, width="stretch", key="runs_table", column_config={
    "step_time_s": st.column_config.NumberColumn("step time (s)", format="%.4f s"),
    "tokens_per_s": st.column_config.NumberColumn("tokens/s", format="localized")})
by_name = {r.name: r for r in history}
if picked:
    overlay_runs([by_name[n].path for n in picked], key="history")
    inspect = st.selectbox("Inspect", picked, key="run_inspect") if len(picked) > 1 else picked[0]
    show_run(by_name[inspect], running=job is not None and job.running and job.out_dir.name == inspect)
    with st.expander("Delete a run"):
        doomed = st.selectbox("Run", names, key="run_delete_pick")
        busy = job is not None and job.running and job.out_dir.name == doomed

        def _delete(name: str = doomed) -> None:  # a callback: runs before the widgets are drawn again
            try:
                runs.delete_run(root, name)
            except ValueError as exc:
                ss["_run_delete_error"] = str(exc)
            else:
                ss["run_pick"] = [n for n in ss.get("run_pick", []) if n != name]

        st.button(f"Delete {doomed}", key="run_delete", disabled=busy, help="removes its folder", on_click=_delete)
        if ss.get("_run_delete_error"):
            st.error(ss.pop("_run_delete_error"))
