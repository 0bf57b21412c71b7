"""The Run page trains a plan for real (paraplan run: torchrun, Gloo, 2 processes) into the runs folder,
shows live progress, then predicted vs measured (the closed loop's prediction, error in %), the measured
step beside the simulated one, and keeps the run in its history (overlay, delete)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")


def _quick_profile(path: Path, model: str) -> None:
    """A real (short) profile of this machine where the Run page keeps its profiles, so the test does not
    wait for the full one (the browser test runs the full one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "planner.cli", "profile", "--out", str(path), "--model", model,
                    "--nprocs", "0", "--repeats", "1", "--no-progress"], check=True, capture_output=True)


def _wait(job, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while job.running and time.monotonic() < deadline:
        time.sleep(2)
    assert not job.running, f"the run did not finish: {job.log_tail()}"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.xdist_group("dist")
def test_run_page_runs_a_custom_plan_into_the_runs_folder_and_compares(tmp_path, monkeypatch):
    """The first run measures this machine's profile (validate --local's settings) and then runs; the
    second reuses that profile."""
    from ui import runs

    monkeypatch.setenv(runs.RUNS_ENV, str(tmp_path / "runs"))
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["nodes"] = 1
    at.run()
    at.switch_page("views/run.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.radio(key="run_source").set_value("custom").run()
    at.number_input(key="run_dp").set_value(2)
    at.number_input(key="run_steps").set_value(4)
    at.number_input(key="run_procs").set_value(2)
    at.number_input(key="run_global_batch").set_value(4)
    at.button(key="run_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = at.session_state["_run_job"]
    assert job.out_dir.parent == tmp_path / "runs"  # a folder of its own in the runs folder
    assert "profile" in job.argv[-1]  # profile first (none kept yet), then the run
    _wait(job, 540)
    assert runs.profile_path(tmp_path / "runs", "tiny-llama", 2).is_file()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert job.returncode == 0, job.log_tail()
    assert not at.error, [e.value for e in at.error] + [job.log_tail()]
    table = next(d.value for d in at.dataframe if "error_pct" in d.value.columns)
    assert list(table["metric"])[:2] == ["step time", "tokens/s"]
    assert table["error_pct"].notna().all()
    assert len(at.get("vega_lite_chart")) >= 5  # curves, predicted vs measured, simulated + measured step, memory
    validation = next(d.value for d in at.dataframe if "perplexity" in d.value.columns)
    assert list(validation["step"]) == [4] and (validation["perplexity"] > 1).all()  # the held-out split, at the end
    assert (job.out_dir / "trace" / "rank0.json").is_file() and (job.out_dir / "request.json").is_file()
    assert at.query_params.get("runs") == job.out_dir.name  # the shown run is in the link

    # a second run: both in the history, overlaid; then one deleted from the app
    at.number_input(key="run_steps").set_value(3)
    at.checkbox(key="run_trace").uncheck()
    at.button(key="run_start").click().run()
    second = at.session_state["_run_job"]
    assert second.out_dir != job.out_dir and "profile" not in " ".join(second.argv)  # the kept profile
    _wait(second, 300)
    at.run()
    names = {r.name for r in runs.list_runs(tmp_path / "runs")}
    assert names == {job.out_dir.name, second.out_dir.name}
    at.multiselect(key="run_pick").set_value([job.out_dir.name, second.out_dir.name]).run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="run_delete_pick").set_value(second.out_dir.name).run()
    at.button(key="run_delete").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert {r.name for r in runs.list_runs(tmp_path / "runs")} == {job.out_dir.name}
    assert not second.out_dir.exists()


def test_run_is_checked_and_scaled_by_the_executor_before_it_starts(tmp_path):
    from costmodel import ParallelPlan
    from ui import runs

    changes = runs.check_run(ParallelPlan(dp=8, zero_stage=3, micro_batch_size=2), model="tiny-llama", steps=2,
                             procs=2, global_batch=8, out=tmp_path)
    assert any("dp" in c for c in changes), changes
    with pytest.raises(ValueError, match="tp"):
        runs.check_run(ParallelPlan(tp=3), model="tiny-llama", steps=2, procs=3, global_batch=8, out=tmp_path)
    argv = runs.run_argv(tmp_path / "plan.json", model="tiny-llama", steps=5, procs=2, global_batch=8, out=tmp_path,
                         seq_len=32, trace_step=runs.TRACE_STEP_LAST)
    assert "run" in argv and str(tmp_path / "plan.json") in argv
    assert argv[argv.index("--scale-to") + 1] == "2" and argv[argv.index("--trace-step") + 1] == "5"
    # the profile is measured as validate --local measures its own
    prof = runs.profile_argv(tmp_path / "p.json", model="small-llama", procs=4)
    assert prof[prof.index("--nprocs") + 1] == "4" and prof[prof.index("--sizes") + 1] == "1KB-4MB"
    assert runs.job_argv(["a", "b c"], ["d"])[-1] == "a 'b c' && d"

    for compile_blocks, flag in ((True, "--compile"), (False, "--no-compile")):
        assert flag in runs.run_argv(tmp_path / "plan.json", model="tiny-llama", steps=2, procs=2, global_batch=8,
                                     out=tmp_path, compile=compile_blocks)
    assert "--compile" not in argv and "--no-compile" not in argv  # no choice made: the device's default

def test_run_page_has_a_compile_toggle():
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["nodes"] = 1
    at.run()
    at.switch_page("views/run.py").run()
    assert not at.exception, [e.value for e in at.exception]
    from ui import runs

    toggle = at.toggle(key="run_compile")
    assert toggle.value is runs.compile_default()  # as `paraplan run`: compiled on a GPU machine, eager on CPUs
    toggle.set_value(not toggle.value).run()
    assert not at.exception and at.toggle(key="run_compile").value is not runs.compile_default()


def test_runs_folder_lists_new_runs_first_never_reuses_a_name_and_deletes_only_runs(tmp_path):
    from costmodel import ParallelPlan
    from ui import runs

    plan = ParallelPlan(dp=2)
    a = runs.new_run_dir(tmp_path, model="tiny-llama", plan=plan)
    b = runs.new_run_dir(tmp_path, model="tiny-llama", plan=plan)
    assert a != b and a.is_dir() and b.is_dir()
    runs.write_request(a, {"model": "tiny-llama"})
    time.sleep(0.01)
    runs.write_request(b, {"model": "tiny-llama"})
    assert [r.path for r in runs.list_runs(tmp_path)] == [b, a]
    assert all(r.status == "incomplete" for r in runs.list_runs(tmp_path))
    (tmp_path / "profiles").mkdir()
    with pytest.raises(ValueError):
        runs.delete_run(tmp_path, "profiles")
    with pytest.raises(ValueError):
        runs.delete_run(tmp_path, "../x")
    runs.delete_run(tmp_path, a.name)
    assert not a.exists() and b.exists()
    shutil.rmtree(b)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.xdist_group("dist")
def test_trace_of_a_run_is_read_per_rank_in_the_timeline_kinds(tmp_path):
    """A real 2-rank pipeline run with a profiled step: intervals per stage lane, the simulated kinds,
    memory samples; and the traced step is left out of the summary's median."""
    from costmodel import ParallelPlan, save_plan
    from ui import trace
    from ui.run_view import stage_lanes

    plan = ParallelPlan(pp=2, schedule="1f1b")
    save_plan(plan, tmp_path / "plan.json")
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "planner.cli", "run", str(tmp_path / "plan.json"), "--model", "tiny-llama",
                    "--steps", "3", "--global-batch", "4", "--seq-len", "32", "--out", str(out), "--trace-step", "3",
                    "--log-every", "0"], check=True, capture_output=True, timeout=240)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1].get("traced") is True and not records[1].get("traced")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step_time_s"] == pytest.approx(records[1]["step_time_s"])  # the median skips step 3
    step = trace.read_run_trace(out, lanes=stage_lanes(plan, [0, 1]))
    assert step is not None and step.step_ms > 0
    lanes = set(step.events["lane"])
    assert {"stage 0 · rank 0", "stage 1 · rank 1"} <= lanes
    kinds = set(step.events["kind"])
    assert {"fwd", "bwd", "optimizer"} <= kinds and ({"send", "recv"} & kinds)
    assert (step.events["end_ms"] <= step.step_ms + 1e-6).all()
    assert not step.memory.empty and (step.memory["allocated_bytes"] >= 0).all()


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.xdist_group("dist")
def test_calibrate_page_profiles_this_machine_and_shows_the_profile(tmp_path, monkeypatch):
    from ui import runs

    monkeypatch.setenv(runs.RUNS_ENV, str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("views/calibrate.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.checkbox(key="profile_quick").value
    at.button(key="profile_start").click().run()
    job = at.session_state["_profile_job"]
    _wait(job, 300)
    assert job.returncode == 0, job.log_tail()
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]] + [job.log_tail()]
    assert any("Profile written" in s.value for s in at.success)
    saved = Path(at.session_state["_calibration_profile"])
    assert saved.name == "profile.json" and saved.is_relative_to(tmp_path / "runs" / "profiles")
    gemm = next(d.value for d in at.dataframe if {"m", "n", "k", "gflop_per_s"} <= set(d.value.columns))
    assert len(gemm) > 0 and (gemm["gflop_per_s"] > 0).all() and "time_us" in gemm.columns


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.xdist_group("dist")
def test_run_page_predicts_exactly_what_validate_local_predicts(tmp_path):
    """`paraplan validate --local` runs a plan and writes its prediction; the Run page's prediction of
    that same run directory, with the same profile, is the same number (step time and memory)."""
    import pandas as pd

    from ui import runs

    profile = tmp_path / "profile.json"
    _quick_profile(profile, "tiny-llama")
    subprocess.run([sys.executable, "-m", "planner.cli", "validate", "--local", "--model", "tiny-llama", "--procs", "2",
                    "--max-plans", "1", "--steps", "3", "--global-batch", "8", "--seq-len", "32", "--no-cv",
                    "--profile", str(profile), "--out", str(tmp_path / "val")], check=True, capture_output=True,
                   timeout=360)
    row = pd.read_csv(tmp_path / "val" / "validation.csv").iloc[0]
    measured, predicted = runs.predict(Path(row["run_dir"]), profile)
    assert predicted.step_time_s == pytest.approx(row["predicted_step_time_s"], rel=1e-12)
    assert predicted.estimate.memory.allocated_bytes == pytest.approx(row["predicted_peak_bytes"], rel=1e-12)
    assert measured.step_time_s == pytest.approx(row["measured_step_time_s"], rel=1e-12)
