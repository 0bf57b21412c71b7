"""Calibrate: measure this machine (`paraplan profile`), and show how far to trust the predictions
(the validation report: predicted vs measured per plan)."""

from __future__ import annotations

import re
import time

import pandas as pd
import streamlit as st

from ui import calibration, jobs, runs, services

st.title("Calibrate")
commands = services.cli_subcommands()

st.header("Profile this machine")
st.caption("`paraplan profile` measures GEMMs, attention, memory bandwidth and collectives across local "
           "processes and writes a calibration profile the cost model can use.")
if "profile" not in commands:
    st.warning("Profiling is not available yet: this build's `paraplan` has no `profile` subcommand.")
else:
    job: jobs.Job | None = st.session_state.get("_profile_job")
    quick = st.checkbox("Quick: GEMMs, attention and memory only (no collectives), 1 repeat", value=True,
                        key="profile_quick")
    if st.button("Run profiler", disabled=job is not None and job.running, key="profile_start"):
        out = runs.runs_root() / "profiles" / f"calibrate-{time.strftime('%Y%m%d-%H%M%S')}"
        out.mkdir(parents=True, exist_ok=True)
        job = jobs.start_job(calibration.profile_argv(out, quick=quick), out_dir=out)
        st.session_state["_profile_job"] = job

    @st.fragment(run_every=1.0)
    def _profile_progress() -> None:
        current: jobs.Job | None = st.session_state.get("_profile_job")
        if current is None:
            return
        if current.running:
            st.info(f"Profiling... {current.elapsed_s:.0f} s")
        elif current.returncode != 0:
            st.error(f"The profiler failed (exit {current.returncode}).")
        else:
            profile = calibration.find_profile(current.out_dir)
            if profile is None:
                st.error("The profiler finished but wrote no profile JSON.")
            else:
                st.session_state["_calibration_profile"] = str(current.out_dir / "profile.json")
                st.success(f"Profile written to {current.out_dir / 'profile.json'}; `paraplan estimate|plan "
                           "--calibration FILE` predicts with it.")
                calibration.show_profile(profile)
        with st.expander("Profiler log"):
            st.code(current.log_tail() or "(no output yet)")

    _profile_progress()

st.header("Validation: predicted vs measured")
report = calibration.find_validation()
if report.csv is not None:
    df = pd.read_csv(report.csv)
    st.caption(f"The current closed loop on this project's machine (`paraplan validate --local`), from "
               f"`docs/{report.csv.name}`, the CSV docs/VALIDATION.md's local section names.")
    calibration.show_validation(df)
    if report.others:
        with st.expander(f"Earlier rounds ({len(report.others)} CSVs kept for comparison)"):
            older = st.selectbox("CSV", [p.name for p in report.others], key="val_older")
            calibration.show_validation(pd.read_csv(report.csv.parent / older), headline=False)
if report.markdown is not None:
    with st.expander(f"{report.markdown.name}", expanded=report.csv is None):
        st.markdown(re.sub(r"<!--.*?-->", "", report.markdown.read_text(), flags=re.S))  # section markers
if report.csv is None and report.markdown is None:
    st.info("No validation report yet (docs/VALIDATION.md and its CSV are written by `paraplan validate`).")

if "validate" in commands and "--local" in services.cli_options("validate"):
    st.subheader("Validate on this machine")
    c = st.columns(3)
    procs = int(c[0].number_input("Processes", 1, 8, 2, key="val_procs"))
    plans = int(c[1].number_input("Plans", 1, 64, 3, key="val_plans"))
    steps = int(c[2].number_input("Steps per plan", 1, 50, 2, key="val_steps"))
    vjob: jobs.Job | None = st.session_state.get("_validate_job")
    if st.button("Run reduced validation", disabled=vjob is not None and vjob.running, key="val_start"):
        out = runs.runs_root() / "validations" / time.strftime("%Y%m%d-%H%M%S")
        argv = jobs.paraplan_argv("validate", "--local", "--procs", str(procs), "--max-plans", str(plans),
                                  "--steps", str(steps), "--out", str(out))
        st.session_state["_validate_job"] = jobs.start_job(argv, out_dir=out)

    @st.fragment(run_every=1.0)
    def _validate_progress() -> None:
        current: jobs.Job | None = st.session_state.get("_validate_job")
        if current is None:
            return
        csv = current.out_dir / "validation.csv"
        if current.running:
            st.info(f"Validating... {current.elapsed_s:.0f} s")
        elif current.returncode != 0 or not csv.is_file():
            st.error(f"Validation failed (exit {current.returncode}).")
        else:
            calibration.show_validation(pd.read_csv(csv))
        with st.expander("Validation log"):
            st.code(current.log_tail() or "(no output yet)")

    _validate_progress()
elif "validate" not in commands:
    st.caption("Running a validation from here is not available yet (no `paraplan validate` subcommand).")
