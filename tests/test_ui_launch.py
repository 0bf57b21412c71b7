"""The Run page hands the chosen plan to a cluster: the launch file (sbatch script, Kubernetes manifest,
Ray driver, torchrun script) the executor's launchers write, as a download."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")


@pytest.mark.parametrize("target, name, first_line", [
    ("slurm", ".sbatch", "#!/bin/bash"), ("kubernetes", ".pytorchjob.yaml", "apiVersion: v1"),
])
def test_run_page_builds_the_launch_file_of_the_chosen_plan(target, name, first_line):
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["nodes"] = 1
    at.run()
    at.switch_page("views/run.py").run()
    at.radio(key="run_source").set_value("Custom plan").run()
    at.number_input(key="run_dp").set_value(2)
    at.selectbox(key="run_launch_target").set_value(target)
    at.button(key="run_launch_build").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    launch_file = at.session_state["_launch_file"]
    assert launch_file.file_name.endswith(name) and launch_file.text.startswith(first_line)
    assert "dp2-tp1-pp1" in launch_file.text
    assert any(b.label == f"Download {launch_file.file_name}" for b in at.get("download_button"))
