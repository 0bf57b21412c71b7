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
