"""`paraplan estimate` and `paraplan validate-published` through planner.cli.main."""

from __future__ import annotations

import json

import pytest

from planner.cli import main

ARGS = ["estimate", "--model", "gpt3-175b", "--cluster", "dgx-a100", "--nodes", "128", "--tp", "8", "--pp", "16",
        "--dp", "8", "--micro-batch", "1", "--global-batch", "1536", "--recompute", "full"]


def test_estimate_prints_a_breakdown(capsys):
    assert main(ARGS) == 0
    out = capsys.readouterr().out
    for word in ("step time", "tokens/s", "MFU", "compute", "TP comm", "bubble", "memory per GPU", "activations"):
        assert word in out


def test_estimate_json_and_timeline(tmp_path, capsys):
    trace = tmp_path / "trace.json"
    assert main(ARGS + ["--json", "--timeline", str(trace)]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["plan"]["pp"] == 16 and est["step_time_s"] > 0 and est["memory"]["peak_bytes"] > 0
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e["tid"] for e in events if e["ph"] == "X" and e["cat"] == "fwd"} == set(range(16))
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("extra, field", [
    (["--cluster", "dgx-z100"], "unknown cluster"),
    (["--tp", "7"], "tp"),
    (["--global-batch", "-4"], "--global-batch"),
    (["--dp", "64"], "dp: the plan needs"),
    (["--model", "no-such-model"], "unknown model"),
])
def test_bad_input_is_one_line_and_exit_2(extra, field, capsys):
    assert main(ARGS + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paraplan: error: ") and field in err and "\n" not in err
