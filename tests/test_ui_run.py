"""The Run page trains a plan for real (paraplan run: torchrun, Gloo, 2 processes), shows live
progress, then predicted vs measured from the run's summary.json."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.xdist_group("dist")
def test_run_page_runs_a_custom_plan_and_compares_with_the_prediction():
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["nodes"] = 1
    at.run()
    at.switch_page("views/run.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.radio(key="run_source").set_value("Custom plan").run()
    at.number_input(key="run_dp").set_value(2)
    at.number_input(key="run_steps").set_value(3)
    at.number_input(key="run_procs").set_value(2)
    at.number_input(key="run_global_batch").set_value(4)
    at.button(key="run_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = at.session_state["_run_job"]
    deadline = time.monotonic() + 420
    while job.running and time.monotonic() < deadline:
        time.sleep(2)
    assert not job.running, f"the run did not finish: {job.log_tail()}"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert job.returncode == 0, job.log_tail()
    assert not at.error, [e.value for e in at.error] + [job.log_tail()]
    assert at.get("progress")[0].value == 100
    table = next(d.value for d in at.dataframe if "error" in d.value.columns)
    assert set(table["metric"]) == {"step time (s)", "tokens/s", "peak memory (GiB)"}
    assert (table["measured"] > 0).all() and (table["predicted"] > 0).all()
    assert len(at.get("vega_lite_chart")) >= 3  # loss, tokens/s, predicted vs measured


def test_run_is_checked_and_scaled_by_the_executor_before_it_starts(tmp_path):
    from costmodel import ParallelPlan
    from ui import runs

    changes = runs.check_run(ParallelPlan(dp=8, zero_stage=3, micro_batch_size=2), model="tiny-llama", steps=2,
                             procs=2, global_batch=8, out=tmp_path)
    assert any("dp" in c for c in changes), changes
    with pytest.raises(ValueError, match="tp"):
        runs.check_run(ParallelPlan(tp=3), model="tiny-llama", steps=2, procs=3, global_batch=8, out=tmp_path)
    argv = runs.run_argv(tmp_path / "plan.json", model="tiny-llama", steps=2, procs=2, global_batch=8, out=tmp_path)
    assert argv[1:3] == ["run", str(tmp_path / "plan.json")] or argv[3:5] == ["run", str(tmp_path / "plan.json")]
    assert "--scale-to" in argv and "--global-batch" in argv
    assert "--compile" not in argv and "--no-compile" not in argv  # no choice made: the device's default
    for compile_blocks, flag in ((True, "--compile"), (False, "--no-compile")):
        assert flag in runs.run_argv(tmp_path / "plan.json", model="tiny-llama", steps=2, procs=2, global_batch=8,
                                     out=tmp_path, compile=compile_blocks)


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


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.xdist_group("dist")
def test_calibrate_page_profiles_this_machine_and_shows_the_profile():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("views/calibrate.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.checkbox(key="profile_quick").value
    at.button(key="profile_start").click().run()
    job = at.session_state["_profile_job"]
    deadline = time.monotonic() + 300
    while job.running and time.monotonic() < deadline:
        time.sleep(2)
    assert job.returncode == 0, job.log_tail()
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]] + [job.log_tail()]
    assert any("Profile written" in s.value for s in at.success)
    assert at.session_state["_calibration_profile"].endswith("profile.json")
    gemm = next(d.value for d in at.dataframe if {"m", "n", "k", "flops_per_s"} <= set(d.value.columns))
    assert len(gemm) > 0 and (gemm["flops_per_s"] > 0).all()
