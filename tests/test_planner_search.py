"""search(): agrees with exhaustive exact scoring, is deterministic, returns valid fitting plans,
explains impossible requests, and names the field of a malformed one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from costmodel import TrainingSpec, check_plan, get_cluster, load_model
from costmodel.step.estimate import estimate
from planner import search, search_exhaustive
from planner.search import OOM_REASON

ONE_PLACEMENT = [("tp", "cp", "dp", "pp")]
SMALL = [
    # (model, cluster, nodes, global batch, seq, constraints)
    ("gpt3-1.3b", "dgx-a100", 1, 64, 2048, dict(zero_stage=(0, 1), placement=ONE_PLACEMENT, max_micro_batch_size=4)),
    ("llama2-7b", "dgx-a100-40gb", 2, 32, 4096, dict(recompute=("none", "full"), zero_stage=(0, 3),
                                                     placement=ONE_PLACEMENT, max_micro_batch_size=2)),
    ("t5-base", "dgx-h100", 1, 48, 512, dict(zero_stage=(0,), sequence_parallel=False, max_micro_batch_size=4,
                                             max_virtual_stages=3)),
    # 30 layers: pp=4 and pp=8 need uneven (balanced) splits
    ("megatron-gpt-3.6b", "dgx-a100-40gb", 1, 32, 2048, dict(zero_stage=(1,), recompute=("selective", "full"),
                                                             cp=1, placement=ONE_PLACEMENT)),
    # mixtures of experts: ep searched over the divisors of dp*cp (60 experts: ep 1-6, 10, 12, ...)
    ("qwen1.5-moe-a2.7b", "dgx-h100", 2, 64, 4096, dict(zero_stage=(1, 3), recompute=("none", "full"),
                                                         placement=ONE_PLACEMENT, max_micro_batch_size=2)),
    ("mixtral-8x7b", "dgx-h100", 4, 64, 4096, dict(zero_stage=(1,), placement=ONE_PLACEMENT,
                                                    max_micro_batch_size=1, max_virtual_stages=2)),
]


def _specs(name, cluster, nodes, batch, seq):
    return load_model(name), get_cluster(cluster, nodes=nodes), TrainingSpec(global_batch_size=batch, seq_len=seq)


@pytest.mark.parametrize("rebalance", [False, True])
@pytest.mark.parametrize("case", SMALL, ids=[c[0] for c in SMALL])
def test_search_returns_exactly_what_exhaustive_scoring_returns(case, rebalance):
    *spec, cons = case
    model, cluster, training = _specs(*spec)
    fast = search(model, cluster, training, top_k=8, rebalance=rebalance, **cons)
    slow = search_exhaustive(model, cluster, training, top_k=8, rebalance=rebalance, **cons)
    assert fast.complete and len(fast.plans) == len(slow) > 0
    for a, b in zip(fast.plans, slow, strict=True):
        assert a.plan == b.plan
        assert a.estimate.step_time_s == pytest.approx(b.estimate.step_time_s, rel=1e-12)
    assert fast.num_rescored < fast.num_valid  # the bulk pass pruned most candidates


def test_results_are_deterministic_valid_and_fit():
    model, cluster, training = _specs("gpt3-2.7b", "dgx-a100", 2, 128, 2048)
    a = search(model, cluster, training, top_k=10, max_micro_batch_size=4)
    b = search(model, cluster, training, top_k=10, max_micro_batch_size=4)
    assert [r.plan for r in a.plans] == [r.plan for r in b.plans]
    times = [r.estimate.step_time_s for r in a.plans]
    assert times == sorted(times)
    for r in a.plans:
        check_plan(model, cluster, training, r.plan)  # raises if invalid
        assert r.estimate.fits and r.plan.world_size == cluster.num_gpus
        again = estimate(model, cluster, training, r.plan)
        assert again.step_time_s == pytest.approx(r.estimate.step_time_s, rel=1e-12)
    # accounting: every candidate is valid or rejected for a reason
    assert a.num_candidates == a.num_valid + sum(v for k, v in a.rejections.items() if k != OOM_REASON)
    assert a.num_fit + a.rejections.get(OOM_REASON, 0) == a.num_valid


def test_to_frame_has_every_knob_and_figure_and_pareto_is_nondominated():
    model, cluster, training = _specs("llama3-8b", "dgx-h100", 1, 64, 8192)
    result = search(model, cluster, training, top_k=5, max_micro_batch_size=2)
    df = result.to_frame()
    assert len(df) == 5 and list(df["rank"]) == [1, 2, 3, 4, 5]
    for col in ("dp", "tp", "pp", "cp", "micro_batch_size", "virtual_stages", "schedule", "zero_stage",
                "recompute", "sequence_parallel", "placement", "layers_per_stage", "step_time_s",
                "tokens_per_s", "mfu", "peak_bytes", "bubble_s", "dp_comm_s", "activations_bytes"):
        assert col in df.columns
    front = result.pareto_frame("memory")
    assert len(front) >= 1
    t, m = front["step_time_s"].to_numpy(), front["peak_bytes"].to_numpy()
    for i in range(len(front)):
        dominated = (t <= t[i]) & (m <= m[i]) & ((t < t[i]) | (m < m[i]))
        assert not dominated.any()
    assert front["step_time_s"].min() == pytest.approx(result.best.step_time_s)
    assert result.rejections_frame()["plans"].sum() == sum(result.rejections.values())


def test_constraints_are_respected():
    model, cluster, training = _specs("gpt3-175b", "dgx-a100", 8, 256, 2048)
    result = search(model, cluster, training, top_k=10, tp=8, max_pp=8, schedule="1f1b", zero_stage=1)
    assert result.plans
    for r in result.plans:
        p = r.plan
        assert p.tp == 8 and p.pp <= 8 and p.schedule == "1f1b" and p.zero_stage in (0, 1)


def test_fewer_gpus_are_used_only_when_allowed():
    model, cluster, training = _specs("gpt3-1.3b", "dgx-a100", 2, 32, 2048)
    full = search(model, cluster, training, top_k=3)
    assert all(r.plan.world_size == 16 for r in full.plans)
    fewer = search(model, cluster, training, top_k=3, allow_fewer_gpus=True)
    gpus = {r.estimate.num_gpus for r in fewer.pareto_gpus}
    assert min(gpus) < 16 and fewer.best.step_time_s <= full.best.step_time_s * (1 + 1e-12)


def test_impossible_request_returns_no_plans_and_a_message_with_numbers():
    model, cluster, training = _specs("megatron-gpt-1t", "dgx-a100", 1, 64, 2048)
    result = search(model, cluster, training)
    assert result.best is None and result.plans == ()
    assert "GiB" in result.message and "80.0 GiB" in result.message
    assert "more GPUs" in result.message and "nodes" in result.message
    assert result.rejections[OOM_REASON] == result.num_valid


def test_every_candidate_invalid_is_explained():
    model, cluster, training = _specs("gpt3-1.3b", "dgx-a100", 1, 64, 2048)
    result = search(model, cluster, training, tp=3)
    assert result.best is None
    assert "constraints" in result.message or "rule" in result.message


@pytest.mark.parametrize("kwargs,field", [
    (dict(tp="eight"), "tp"), (dict(max_pp=0), "max_pp"), (dict(schedule="2f2b"), "schedule"),
    (dict(zero_stage=4), "zero_stage"), (dict(top_k=0), "top_k"), (dict(tensor_parallel=8), "tensor_parallel"),
    (dict(placement="tp-dp"), "placement"), (dict(recompute="some"), "recompute"),
])
def test_malformed_requests_name_the_field(kwargs, field):
    model, cluster, training = _specs("gpt3-1.3b", "dgx-a100", 1, 64, 2048)
    with pytest.raises(ValueError, match=field):
        search(model, cluster, training, **kwargs)


def test_bulk_pass_agrees_with_estimate_on_even_splits():
    from planner.scoring import bulk_scores
    from planner.space import build_space

    model, cluster, training = _specs("gpt3-6.7b", "dgx-a100", 2, 64, 2048)
    space = build_space(model, cluster, training)
    bulk = bulk_scores(model, cluster, training, space)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(space), size=40, replace=False):
        plan = space.plan(int(i))
        if model.total_layers % (plan.pp * plan.virtual_stages):
            continue
        est = estimate(model, cluster, training, plan)
        assert bulk["step_time_s"][i] == pytest.approx(est.step_time_s, rel=1e-9)
        assert bulk["peak_bytes"][i] == pytest.approx(est.memory.peak_bytes, rel=1e-9)


def test_bulk_pass_of_an_empty_space_is_empty():
    from planner.constraints import Constraints
    from planner.scoring import bulk_scores
    from planner.space import build_space

    model, cluster, training = _specs("gpt3-1.3b", "dgx-a100", 1, 64, 2048)
    space = build_space(model, cluster, training, Constraints.from_kwargs(tp=8, pp=8))
    assert len(space) == 0
    assert {k: v.shape for k, v in bulk_scores(model, cluster, training, space).items()} == {
        "step_time_s": (0,), "peak_bytes": (0,), "step_time_s_lb": (0,), "peak_bytes_lb": (0,)}


def _per_group_reference(model, cluster, training, space, *, calibration=None, topology=None):
    """The bulk pass as it was: one `step_costs` call per (dp, tp, pp, cp, placement) group."""
    from costmodel.specs import ParallelPlan
    from costmodel.step.costs import Knobs, step_costs
    from costmodel.step.estimate import comm_model, step_context

    c = space.columns
    ctx = step_context(model, cluster, training, calibration=calibration)
    out = {k: np.full(len(space), np.nan) for k in ("step_time_s", "peak_bytes")}
    keys = np.stack([c["dp"], c["tp"], c["pp"], c["cp"], c["ep"], c["placement"]], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    for g, (dp, tp, pp, cp, ep, pl) in enumerate(uniq.tolist()):
        rows = np.flatnonzero(inverse == g)
        comm = comm_model(cluster, ParallelPlan(dp=dp, tp=tp, pp=pp, cp=cp, ep=ep, placement=space.placements[pl]),
                          topology=topology, calibration=calibration)
        k = Knobs(dp=dp, tp=tp, pp=pp, cp=cp, mb=c["mb"][rows], v=c["v"][rows], schedule=c["schedule"][rows],
                  zero=c["zero"][rows], recompute=c["recompute"][rows], sp=c["sp"][rows].astype(np.int64), ep=ep)
        res = step_costs(ctx, k, comm)
        for key in out:
            out[key][rows] = res[key]
    return out


GROUPED = [
    # (model, cluster, nodes, batch, seq, calibrated, user topology, constraints): placements, cp > 1, enc-dec
    ("llama2-7b", "dgx-a100", 4, 64, 4096, False, False, dict(max_micro_batch_size=2)),
    ("t5-base", "dgx-h100", 2, 48, 512, False, False, dict(max_micro_batch_size=4, max_virtual_stages=3)),
    ("gpt3-1.3b", "dgx-a100", 2, 64, 2048, True, False, dict(max_micro_batch_size=2)),
    ("megatron-gpt-3.6b", "dgx-a100", 4, 64, 2048, False, True, dict(max_micro_batch_size=2)),
    ("llama2-7b", "dgx-h100", 2, 32, 2048, False, False, dict(max_micro_batch_size=2, allow_fewer_gpus=True,
                                                              zero_stage=(1, 3))),
    ("deepseek-v2", "dgx-h100", 8, 128, 4096, False, False, dict(max_micro_batch_size=1, zero_stage=(1, 3),
                                                                 max_virtual_stages=2)),
]


@pytest.mark.parametrize("case", GROUPED, ids=["llama-cp", "t5", "calibrated", "user-topology-uneven", "fewer-gpus",
                                               "moe"])
def test_grouped_bulk_pass_equals_the_per_group_pass(case):
    from test_costmodel_calibration import synthetic_profile

    from costmodel.network.topology import build_topology
    from planner.constraints import Constraints
    from planner.scoring import bulk_scores
    from planner.space import build_space

    name, preset, nodes, batch, seq, calibrated, user_topology, cons = case
    model, cluster, training = _specs(name, preset, nodes, batch, seq)
    calibration = synthetic_profile(gpu=cluster.gpu.name, group_sizes=(2, 4, 8)) if calibrated else None
    topology = (build_topology(get_cluster(preset, nodes=nodes, intra_node_topology="cube-mesh"))
                if user_topology else None)
    space = build_space(model, cluster, training, Constraints.from_kwargs(**cons))
    assert len(set(space.columns["placement"].tolist())) > 1 and len(space) > 500
    bulk = bulk_scores(model, cluster, training, space, calibration=calibration, topology=topology)
    ref = _per_group_reference(model, cluster, training, space, calibration=calibration, topology=topology)
    for key in ref:   # bit for bit: the table (one pricing per ZeRO-free combination) changes no figure
        np.testing.assert_array_equal(bulk[key], ref[key], err_msg=key)
    # the table's columns from build_space's key or from the knob columns alone: the same figures
    again = bulk_scores(model, cluster, training, dataclasses.replace(space, zero_key=None), calibration=calibration,
                        topology=topology, rebalance=True)
    rebalanced = bulk_scores(model, cluster, training, space, calibration=calibration, topology=topology,
                             rebalance=True)
    for key in rebalanced:
        np.testing.assert_array_equal(again[key], rebalanced[key], err_msg=key)
    rng = np.random.default_rng(1)
    checked = 0
    for i in rng.permutation(len(space))[:60]:
        plan = space.plan(int(i))
        if model.total_layers % (plan.pp * plan.virtual_stages):
            continue
        est = estimate(model, cluster, training, plan, calibration=calibration, topology=topology)
        assert bulk["step_time_s"][i] == pytest.approx(est.step_time_s, rel=1e-12)
        assert bulk["peak_bytes"][i] == pytest.approx(est.memory.peak_bytes, rel=1e-12)
        checked += 1
    assert checked >= 10
