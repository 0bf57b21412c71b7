"""Every plan the planner returns says whether the executor runs it on the cluster's device (the rules of
`costmodel.step.runnable`), in the result, its DataFrame, the CLI table and JSON; `runnable_only`
keeps the runnable ones, in the same order."""

from __future__ import annotations

import json

from costmodel import ParallelPlan, TrainingSpec, get_cluster, load_model
from executor.launch import plan_unsupported
from planner import search
from planner.cli import main

CPU = get_cluster("cpu", nodes=1)
TINY = load_model("tiny-llama")


def test_plans_the_executor_cannot_run_are_marked_with_the_reason():
    """seq_len 18: cp=2 splits it into 4 chunks, which 18 tokens do not fill evenly."""
    training = TrainingSpec(global_batch_size=4, seq_len=18, dtype="fp32")
    result = search(TINY, CPU, training, top_k=200, cp=2)
    assert result.plans and not any(r.runnable for r in result.plans)
    single_stage = [r for r in result.plans if r.plan.pp == 1]   # pipelines may break a schedule rule first
    assert single_stage and all(r.not_runnable.startswith("cp: seq_len=18") for r in single_stage)
    df = result.to_frame()
    assert not df["runnable"].any() and (df["not_runnable"] != "").all()
    # the executor's own check (prepare_run, paraplan run) says the same
    for r in result.plans[:3]:
        assert plan_unsupported(r.plan, model=TINY, seq_len=18, global_batch=4, device="cpu") == r.not_runnable
    only = search(TINY, CPU, training, top_k=5, cp=2, runnable_only=True)
    assert not only.plans and "no plan the executor runs" in only.message
    assert only.rejections["not runnable by the executor: cp"] > 0


def test_runnable_only_keeps_the_runnable_plans_in_rank_order():
    """Global batch 4 over pp=2: 1F1B needs at least 2 micro-batches, so micro-batch 4 does not run."""
    training = TrainingSpec(global_batch_size=4, seq_len=16, dtype="fp32")
    every = search(TINY, CPU, training, top_k=500, pp=2, schedule="1f1b")
    blocked = [r for r in every.plans if not r.runnable]
    assert blocked and all(r.not_runnable.startswith("micro_batch_size: 1f1b needs") for r in blocked)
    only = search(TINY, CPU, training, top_k=500, pp=2, schedule="1f1b", runnable_only=True)
    assert [r.plan for r in only.plans] == [r.plan for r in every.plans if r.runnable]
    assert all(r.runnable for r in (*only.plans, *only.pareto_memory, *only.pareto_gpus))
    assert [r.rank for r in only.plans] == list(range(1, len(only.plans) + 1))


def test_cli_table_and_json_show_whether_each_plan_runs(tmp_path, capsys):
    args = ["plan", "--model", "tiny-llama", "--cluster", "cpu", "--nodes", "1", "--global-batch", "4",
            "--seq-len", "18", "--cp", "2", "--top-k", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "runs" in out.splitlines()[0] and "no (cp)" in out
    assert "not runnable by the executor: #1, #2, #3: cp: seq_len=18" in out
    assert main([*args, "--json"]) == 0
    plans = json.loads(capsys.readouterr().out)["plans"]
    assert plans and all(p["runnable"] is False and p["not_runnable"].startswith("cp:") for p in plans)
    assert main([*args, "--runnable-only"]) == 1   # nothing runnable: exit 1 with the reason
    assert "no plan the executor runs" in capsys.readouterr().out
    ok = ["plan", "--model", "tiny-llama", "--cluster", "cpu", "--nodes", "1", "--global-batch", "4",
          "--seq-len", "16", "--cp", "2", "--top-k", "2", "--save", str(tmp_path / "p.json")]
    assert main(ok) == 0 and "no (" not in capsys.readouterr().out
    assert ParallelPlan.model_validate_json((tmp_path / "p.json").read_text()).cp == 2


def test_folding_composes_with_runnable_only():
    """No rule of the executor reads the placement, so the plans folded into a ranked plan (`planner.fold`)
    share its runnable status, and `runnable_only` (which skips before folding) returns the folded ranking
    with the classes the executor cannot run dropped."""
    from planner.report import result_json

    model = load_model("gpt3-1.3b").model_copy(update={"tie_embeddings": False})
    cluster = get_cluster("dgx-a100", nodes=4)
    training = TrainingSpec(global_batch_size=8, seq_len=2048)   # dp2 mb4 over pp2: 1 micro-batch, 1F1B cannot
    cons = dict(tp=8, zero_stage=(0,), recompute=("none",), cp=1, max_micro_batch_size=4, placement="all")
    folded = search(model, cluster, training, top_k=30, **cons)
    flat = search(model, cluster, training, top_k=300, fold_equivalent=False, **cons)
    status = {r.plan: r.not_runnable for r in flat.plans}
    assert {r.runnable for r in folded.plans if r.equivalent} == {True, False}
    for r in folded.plans:
        assert r.not_runnable == status[r.plan]
        assert all(status[p] == r.not_runnable for p in r.equivalent)
    df = folded.to_frame()
    assert list(df["runnable"]) == [r.runnable for r in folded.plans]
    assert list(df["equivalent"]) == [len(r.equivalent) for r in folded.plans]
    only = search(model, cluster, training, top_k=10, runnable_only=True, **cons)
    kept = [r for r in folded.plans if r.runnable][:10]
    assert len(kept) == 10 and any(r.equivalent for r in kept)
    assert [(r.plan, r.equivalent) for r in only.plans] == [(r.plan, r.equivalent) for r in kept]
    assert only.num_folded == sum(len(r.equivalent) for r in kept)
    first = json.loads(result_json(only))["plans"][0]
    assert first["runnable"] is True and first["equivalent"] == [json.loads(p.model_dump_json())
                                                                 for p in kept[0].equivalent]
