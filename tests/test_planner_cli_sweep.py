"""`paraplan plan` / `paraplan sweep` and planner.sweep: tables, JSON, CSV, saved plans, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from costmodel import TrainingSpec, check_plan, get_cluster, load_model, load_plan
from planner import sweep
from planner.cli import main

SMALL = ["--model", "gpt3-1.3b", "--cluster", "dgx-a100", "--nodes", "1", "--global-batch", "32",
         "--seq-len", "1024", "--max-micro-batch", "2", "--no-progress"]


def test_plan_prints_a_table_and_saves_csv_and_plan(tmp_path, capsys):
    csv, saved = tmp_path / "plans.csv", tmp_path / "best.json"
    assert main(["plan", *SMALL, "--top-k", "3", "--csv", str(csv), "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "step s" in out and "MFU" in out and "best:" in out
    df = pd.read_csv(csv)
    assert len(df) == 3 and df["step_time_s"].is_monotonic_increasing
    plan = load_plan(saved)
    assert plan.short() == df.loc[0, "plan"]
    check_plan(load_model("gpt3-1.3b"), get_cluster("dgx-a100", nodes=1),
               TrainingSpec(global_batch_size=32, seq_len=1024), plan)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_plan_json_and_constraints(capsys):
    assert main(["plan", *SMALL, "--top-k", "2", "--tp", "2", "--schedule", "1f1b", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["plans"]) == 2 and all(p["plan"]["tp"] == 2 for p in data["plans"])
    assert data["num_valid"] > 0 and data["message"] == ""


def test_plan_impossible_request_exits_1_with_the_reason(capsys):
    code = main(["plan", "--model", "megatron-gpt-1t", "--cluster", "dgx-a100", "--nodes", "1",
                 "--global-batch", "8", "--max-micro-batch", "1", "--recompute", "full", "--no-progress"])
    assert code == 1
    assert "no plan fits" in capsys.readouterr().out


@pytest.mark.parametrize("argv,field", [
    (["--tp", "0"], "tp"), (["--max-pp", "-1"], "max_pp"), (["--placement", "tp-dp"], "placement"),
    (["--model", "gpt-5"], "model"),
])
def test_plan_bad_input_is_one_line_naming_the_field(argv, field, capsys):
    assert main(["plan", *SMALL, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("paraplan: error:") and field in err[0]


def test_sweep_cli_writes_csv(tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    assert main(["sweep", *SMALL, "--vary", "nodes", "--values", "1,2", "--csv", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df["nodes"]) == [1, 2] and list(df["cluster_gpus"]) == [8, 16]
    assert "step_time_s" in capsys.readouterr().out


def test_sweep_varies_each_input():
    model, cluster = load_model("gpt3-1.3b"), get_cluster("dgx-a100", nodes=1)
    training = TrainingSpec(global_batch_size=32, seq_len=1024)
    kw = dict(max_micro_batch_size=2, placement=[("tp", "cp", "dp", "pp")])
    gpus = sweep(model, cluster, training, vary="gpu", values=["a100-80gb", "h100-sxm"], **kw)
    assert gpus["step_time_s"].iloc[1] < gpus["step_time_s"].iloc[0]  # a faster GPU never loses
    bw = sweep(model, get_cluster("dgx-a100", nodes=2), training, vary="inter_node_bw",
               values=["100Gbps", "800Gbps"], **kw)
    assert bw["step_time_s"].iloc[1] <= bw["step_time_s"].iloc[0]
    batch = sweep(model, cluster, training, vary="global_batch", values=[16, 64], **kw)
    assert list(batch["global_batch_size"]) == [16, 64]
    seq = sweep(model, cluster, training, vary="seq_len", values=[512, 2048], **kw)
    assert seq["tokens_per_s"].notna().all()
    with pytest.raises(ValueError, match="vary"):
        sweep(model, cluster, training, vary="color", values=[1])
    with pytest.raises(ValueError, match="values"):
        sweep(model, cluster, training, vary="nodes", values=[0])
