"""Expert parallelism in the planner: ep searched as a divisor of dp*cp, its rules agree with
costmodel.plan_problems (and ep_dp with ParallelPlan's validator), and ep shows in every output."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from costmodel import ParallelPlan, TrainingSpec, get_cluster, load_model, plan_problems
from planner import search
from planner.cli import main
from planner.constraints import Constraints
from planner.rules import RULES, bulk_problems
from planner.space import build_space

GRID = dict(tp=(1, 2), pp=(1, 2), cp=(1, 2), dp=(1, 2, 3, 4), ep=(1, 2, 3, 4, 8))


def _grid(model_name: str):
    plans, cols, invalid = [], {k: [] for k in (*GRID, "mb", "v", "schedule", "sp")}, []
    for values in itertools.product(*GRID.values()):
        row = dict(zip(GRID, values, strict=True))
        try:
            plan = ParallelPlan(**row)
        except ValidationError:
            invalid.append(row)
            continue
        plans.append(plan)
        for k, v in row.items():
            cols[k].append(v)
        cols["mb"].append(1)
        cols["v"].append(1)
        cols["schedule"].append(1)
        cols["sp"].append(False)
    return plans, {k: np.asarray(v) for k, v in cols.items()}, invalid


@pytest.mark.parametrize("name", ["tiny-moe", "mixtral-8x7b", "tiny-llama"])
def test_expert_rules_agree_with_plan_problems(name):
    model, cluster = load_model(name), get_cluster("dgx-h100", nodes=1)
    training = TrainingSpec(global_batch_size=48, seq_len=64)
    plans, cols, invalid = _grid(name)
    masks = bulk_problems(model, cluster, training, cols)
    field_of = {r.code: r.field for r in RULES}
    fired = Counter()
    for i, plan in enumerate(plans):
        expected = Counter(p.field for p in plan_problems(model, cluster, training, plan))
        got = Counter(field_of[code] for code, mask in masks.items() if mask[i])
        assert got == expected, (plan.short(), got, expected)
        fired.update(code for code, mask in masks.items() if mask[i])
    assert fired["ep_moe" if name == "tiny-llama" else "ep_experts"] > 0
    # ep_dp mirrors ParallelPlan's own validator: it fires exactly on the rows the validator refuses
    bad = {k: np.asarray([row[k] for row in invalid]) for k in GRID}
    assert bulk_problems(model, cluster, training, bad, rules=tuple(r for r in RULES if r.code == "ep_dp"))[
        "ep_dp"].all()
    assert not masks["ep_dp"].any()


def test_the_space_searches_ep_only_for_mixtures_of_experts():
    cluster, training = get_cluster("dgx-h100", nodes=2), TrainingSpec(global_batch_size=64, seq_len=4096)
    dense = build_space(load_model("llama3-8b"), cluster, training)
    assert set(dense.columns["ep"].tolist()) == {1}
    moe = build_space(load_model("mixtral-8x7b"), cluster, training, Constraints.from_kwargs(max_ep=8))
    c = moe.columns
    assert set(c["ep"].tolist()) == {1, 2, 4, 8}
    assert ((c["dp"] * c["cp"]) % c["ep"] == 0).all()
    asked = build_space(load_model("llama3-8b"), cluster, training, Constraints.from_kwargs(ep=2))
    assert len(asked) == 0 and asked.rejected["ep_moe"] > 0


def test_search_ranks_expert_parallel_plans_and_shows_ep_everywhere(capsys, tmp_path):
    model, cluster = load_model("mixtral-8x7b"), get_cluster("dgx-h100", nodes=8)
    training = TrainingSpec(global_batch_size=256, seq_len=4096)
    result = search(model, cluster, training, top_k=5, zero_stage=(1, 3), max_micro_batch_size=2)
    assert result.best.plan.ep > 1 and f"ep{result.best.plan.ep}" in result.best.plan.short()
    df = result.to_frame()
    assert "ep" in df and "ep_comm_s" in df and (df["ep"] > 1).all()
    args = ["plan", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--nodes", "8", "--seq-len", "4096",
            "--global-batch", "256", "--top-k", "3", "--zero", "3", "--max-micro-batch", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "all-to-all s" in out and "-ep" in out and "experts: ep=" in out
    assert main(args + ["--json", "--csv", str(tmp_path / "plans.csv")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plans"][0]["plan"]["ep"] > 1 and data["plans"][0]["time"]["ep_comm_s"] > 0
    assert "ep_comm_s" in (tmp_path / "plans.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("extra,needle", [
    (["--model", "mixtral-8x7b", "--ep", "3"], "ep: ep=3 does not divide dp*cp"),
    (["--model", "mixtral-8x7b", "--ep", "16"], "ep: ep=16 does not divide num_experts=8"),
    (["--model", "llama3-8b", "--ep", "2"], "ep: ep=2 needs a mixture-of-experts model"),
    (["--model", "mixtral-8x7b", "--moe-imbalance", "0.5"], "moe_load_imbalance"),
])
def test_bad_expert_input_is_one_line_and_exit_2(extra, needle, capsys):
    base = ["estimate", "--cluster", "dgx-h100", "--nodes", "8", "--seq-len", "4096"]
    assert main(base + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paraplan: error: ") and needle in err and "\n" not in err


def test_bad_hugging_face_moe_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "mixtral", "num_hidden_layers": 2, "hidden_size": 64,
                                "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 256,
                                "num_local_experts": 4, "num_experts_per_tok": 5}))
    assert main(["estimate", "--model", str(path), "--cluster", "dgx-h100", "--seq-len", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert "num_experts_per_tok: 5 exceeds num_local_experts=4" in err and "\n" not in err
