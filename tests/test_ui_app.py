"""Every page of the Streamlit app, headless (streamlit.testing.v1.AppTest), on the real planner and
cost model: defaults render results, inputs change them, impossible and invalid input is shown inline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")
TIMEOUT_S = 240
SMALL = {"nodes": 1}
"""Most tests plan for one node, so the real search stays quick; the defaults test uses the defaults."""


@pytest.fixture(autouse=True)
def _fresh_cache():
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def _run(at: AppTest) -> AppTest:
    at.run(timeout=TIMEOUT_S)
    assert not at.exception, [e.value for e in at.exception]
    return at


def _app(page: str | None = None, **preset) -> AppTest:
    """The app after its first run; `preset` sets sidebar inputs (session state keys) beforehand."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    for key, value in {**SMALL, **preset}.items():
        at.session_state[key] = value
    _run(at)
    if page:
        at.switch_page(page)
        _run(at)
    return at


def _texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def _table(at: AppTest):
    return at.dataframe(key="plan_table").value


def _frame_with(at: AppTest, column: str):
    """The first table on the page with `column` (plain st.dataframe elements carry no key)."""
    for d in at.dataframe:
        if column in d.value.columns:
            return d.value
    raise AssertionError(f"no table with a {column!r} column")


def _charts(at: AppTest) -> list:
    return at.get("vega_lite_chart")


def test_plan_page_defaults_rank_plans_with_figures():
    at = _run(AppTest.from_file(APP, default_timeout=TIMEOUT_S))
    assert not at.error, _texts(at.error)
    df = _table(at)
    assert 1 <= len(df) <= 10
    for col in ("mfu", "tokens_per_s", "step_time_s", "memory_gib", "headroom_gib"):
        assert col in df.columns
    assert (df["headroom_gib"] >= 0).all() and (df["mfu"] > 0).all()
    assert df["step_time_s"].is_monotonic_increasing  # ranked fastest first
    assert len(_charts(at)) >= 1  # Pareto front
    assert {m.label for m in at.metric} >= {"Best tokens/s", "MFU", "Step time"}


def test_changing_node_count_or_model_changes_the_table():
    at = _app()
    before = _table(at)
    assert (before["num_gpus"] <= 8).all()
    at.number_input(key="nodes").set_value(2)
    _run(at)
    more = _table(at)
    assert not at.error, _texts(at.error)
    assert more["num_gpus"].max() > 8 and not more.equals(before)
    at.selectbox(key="model_preset").set_value("llama2-13b")
    _run(at)
    other = _table(at)
    assert not at.error, _texts(at.error)
    assert not other.equals(more)
    assert other["step_time_s"].iloc[0] > more["step_time_s"].iloc[0]  # 13B steps slower than 8B


def test_impossible_request_shows_the_no_fit_message():
    at = _app(model_preset="megatron-gpt-1t")
    assert any("No plan fits" in e.value for e in at.error), _texts(at.error)
    assert "plan_table" not in {d.key for d in at.dataframe}


def test_seq_len_follows_a_smaller_model_and_bad_training_input_is_inline():
    at = _app()
    at.selectbox(key="model_preset").set_value("gpt3-13b")  # max_seq_len 2048 < the default 4096
    _run(at)
    assert at.number_input(key="seq_len").value == 2048
    assert not at.error, _texts(at.error)
    at.number_input(key="seq_len").set_value(4096)
    _run(at)
    assert any("Sequence length: 4096" in e.value and "Max sequence=2048" in e.value for e in at.error), \
        _texts(at.error)


def test_invalid_uploaded_model_file_shows_an_error_not_a_traceback():
    at = _app()
    at.radio(key="model_source").set_value("Upload config.json")
    _run(at)
    at.file_uploader(key="model_upload").upload("config.json", b'{"model_type": "llama", "hidden_size": ',
                                                 "application/json")
    _run(at)
    assert any("not valid JSON" in e.value for e in at.error), _texts(at.error)
    at.file_uploader(key="model_upload").set_value(
        ("config.json", json.dumps({"model_type": "rwkv"}).encode(), "application/json"))
    _run(at)
    assert any("model_type 'rwkv'" in e.value for e in at.error), _texts(at.error)


def test_uploaded_hf_config_is_planned():
    config = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_attention_heads": 32,
              "num_hidden_layers": 22, "num_key_value_heads": 4, "vocab_size": 32000,
              "max_position_embeddings": 2048, "_name_or_path": "tinyllama-1.1b"}
    at = _app()
    at.radio(key="model_source").set_value("Upload config.json")
    _run(at)
    at.file_uploader(key="model_upload").upload("config.json", json.dumps(config).encode(), "application/json")
    _run(at)
    assert not at.error, _texts(at.error)
    assert "tinyllama-1.1b" in _texts(at.caption)
    assert len(_table(at)) >= 1


def test_invalid_uploaded_cluster_file_shows_an_error():
    at = _app()
    at.radio(key="cluster_source").set_value("Upload file")
    _run(at)
    at.file_uploader(key="cluster_upload").upload("lab.yaml", b"gpu: a100-80gb\ngpus_per_node: 0\n"
                                                  b"intra_node_link: nvlink3\ninter_node_link: ib-hdr-200\n")
    _run(at)
    assert any("gpus_per_node" in e.value for e in at.error), _texts(at.error)


def test_constraints_reach_the_search():
    at = _app()
    at.number_input(key="c_tp").set_value(4)
    _run(at)
    assert not at.error, _texts(at.error)
    assert set(_table(at)["tp"]) == {4}


def test_plan_detail_page_shows_timeline_breakdowns_topology_and_downloads():
    at = _app("views/detail.py")
    assert not at.error, _texts(at.error)
    assert len(_charts(at)) >= 4  # timeline, time, memory, topology
    labels = {b.label for b in at.get("download_button")}
    assert {"Plan JSON", "Chrome trace"} <= labels
    at.button(key="build_cmd").click()
    _run(at)
    assert not at.error, _texts(at.error)
    script = at.code[0].value
    assert "torch.distributed.run" in script and "--nproc-per-node 8" in script and "--model llama3-8b" in script
    assert "torchrun command" in {b.label for b in at.get("download_button")}
    picks = at.selectbox(key="detail_pick")
    second = picks.options[1]
    picks.set_value(second)
    _run(at)
    assert not at.error, _texts(at.error)


def test_compare_page_highlights_differences():
    at = _app("views/compare.py")
    assert not at.error, _texts(at.error)
    assert len(at.multiselect(key="compare_pick").value) == 2
    assert len(_charts(at)) >= 2
    table = _frame_with(at, at.multiselect(key="compare_pick").value[0])
    assert {"tp", "pp", "placement", "step time", "MFU", "TFLOP/s per GPU"} <= set(table.index)


def test_whatif_page_sweeps_and_shows_the_pareto_front():
    at = _app("views/whatif.py")
    at.text_input(key="whatif_values_nodes").set_value("1, 2")
    _run(at)
    assert not at.error, _texts(at.error)
    df = _frame_with(at, "gpu_hours_per_1b_tokens")
    assert list(df["nodes"]) == [1, 2]
    assert df["tokens_per_s"].iloc[1] > df["tokens_per_s"].iloc[0]
    assert len(_charts(at)) >= 3  # throughput, cost, Pareto front
    at.text_input(key="whatif_values_nodes").set_value("1, many")
    _run(at)
    assert any("'many'" in e.value for e in at.error), _texts(at.error)


def test_run_and_calibrate_pages_render(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAPLAN_RUNS", str(tmp_path))   # not the working directory's own runs/
    for page in ("views/run.py", "views/calibrate.py"):
        at = _app(page)
        assert not at.error, (page, _texts(at.error))


def test_uploaded_topology_graph_is_planned_and_a_broken_one_is_an_error():
    from test_ui_problem import TOPOLOGY_YAML

    at = _app(model_preset="llama2-7b", global_batch=64)
    at.radio(key="cluster_source").set_value("Upload file")
    _run(at)
    at.file_uploader(key="cluster_upload").upload("two-boxes.yaml", TOPOLOGY_YAML, "application/yaml")
    _run(at)
    assert not at.error, _texts(at.error)
    assert "2 x 4" in _texts(at.caption)
    assert (_table(at)["num_gpus"] <= 8).all()
    broken = TOPOLOGY_YAML.replace(b"bw: 200Gbps", b"bw: fast")
    at.file_uploader(key="cluster_upload").set_value(("two-boxes.yaml", broken, "application/yaml"))
    _run(at)
    assert any("bw" in e.value and "fast" in e.value for e in at.error), _texts(at.error)
