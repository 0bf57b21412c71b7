"""Folding equivalent plans: placements of one plan with the same figures are one ranked row that
lists the others and says why; nothing faster or different is ever hidden; exhaustive scoring folds
the same way; the CLI can list them one by one."""

from __future__ import annotations

import json

from costmodel import ParallelPlan, TrainingSpec, get_cluster, load_model
from planner import search, search_exhaustive
from planner.cli import main
from planner.fold import axis_span, same_figures

# tp fills a server, so dp and pp both cross servers: their order changes nothing on this network
CASE = ("gpt3-1.3b", "dgx-a100", 4, 64, 2048, dict(tp=8, zero_stage=(0,), recompute=("none",), cp=1,
                                                   max_micro_batch_size=2, placement="all"))


def _specs():
    name, cluster, nodes, gbs, seq, cons = CASE
    return load_model(name), get_cluster(cluster, nodes=nodes), TrainingSpec(global_batch_size=gbs, seq_len=seq), cons


def test_equivalent_placements_are_folded_into_the_first_with_the_reason():
    model, cluster, training, cons = _specs()
    folded = search(model, cluster, training, top_k=6, **cons)
    flat = search(model, cluster, training, top_k=60, fold_equivalent=False, **cons)
    assert folded.num_folded > 0
    flat_plans = [r.plan for r in flat.plans]
    for r in folded.plans:
        for other in r.equivalent:
            assert other.placement != r.plan.placement
            assert other.model_copy(update={"placement": r.plan.placement}) == r.plan
            twin = flat.plans[flat_plans.index(other)]
            assert same_figures(twin.estimate, r.estimate)
            assert flat_plans.index(r.plan) < flat_plans.index(other)  # the first one is kept
        if r.equivalent:
            assert "same step time, breakdown and memory" in r.equivalent_note
            assert "-".join(r.equivalent[0].placement) in r.equivalent_note
    # no two ranked rows are the same choice; every distinct plan of the flat list is kept in order
    keys = [(r.plan.model_dump_json(exclude={"placement"}), round(r.estimate.step_time_s, 9)) for r in folded.plans]
    assert len(set(keys)) == len(keys)
    folded_away = [p for r in folded.plans for p in r.equivalent]
    assert [r.plan for r in folded.plans] == [p for p in flat_plans if p not in folded_away][:6]
    df = folded.to_frame()
    assert (df["equivalent"] == [len(r.equivalent) for r in folded.plans]).all()
    assert df["equivalent_placements"].str.contains("-").any()


def test_search_folds_exactly_like_exhaustive_scoring():
    model, cluster, training, cons = _specs()
    fast = search(model, cluster, training, top_k=5, **cons)
    slow = search_exhaustive(model, cluster, training, top_k=5, **cons)
    assert fast.complete and len(fast.plans) == len(slow) > 0
    for a, b in zip(fast.plans, slow, strict=True):
        assert a.plan == b.plan and a.equivalent == b.equivalent
        assert a.estimate.step_time_s == b.estimate.step_time_s


def test_axis_span_says_where_a_group_sits():
    plan = ParallelPlan(dp=4, tp=8, pp=2, placement=("tp", "cp", "dp", "pp"))
    assert axis_span(plan, "tp", 8) == "inside a server"
    assert axis_span(plan, "dp", 8) == "across 4 servers"
    half = ParallelPlan(dp=4, tp=2, pp=2, placement=("tp", "dp", "pp", "cp"))
    assert axis_span(half, "dp", 8) == "inside a server"
    assert axis_span(half, "pp", 8) == "across 2 servers"
    assert axis_span(ParallelPlan(dp=8, tp=2), "dp", 8) == "across 2 servers (4 per server)"


def test_cli_lists_folded_plans_and_all_placements_unfolds_them(capsys):
    name, cluster, nodes, gbs, seq, _ = CASE
    argv = ["plan", "--model", name, "--cluster", cluster, "--nodes", str(nodes), "--global-batch", str(gbs),
            "--seq-len", str(seq), "--tp", "8", "--zero", "0", "--recompute", "none", "--cp", "1",
            "--max-micro-batch", "2", "--placement", "all", "--top-k", "4"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_folded"] > 0 and any(p["equivalent"] and p["equivalent_note"] for p in data["plans"])
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "same as" in text and "folded" in text
    assert main([*argv, "--all-placements", "--json"]) == 0
    flat = json.loads(capsys.readouterr().out)
    assert flat["num_folded"] == 0 and not any(p["equivalent"] for p in flat["plans"])
