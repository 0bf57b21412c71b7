"""One `step_costs` call over plans of many degrees (dp/tp/cp per row, a `GroupedComm`) gives the very
numbers of one call per degree group (scalar degrees, that group's CommModel) and of `estimate`:
decoder and encoder-decoder models, cp > 1, a calibration profile and a user topology."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_costmodel_calibration import synthetic_profile

from costmodel import ParallelPlan, TrainingSpec, estimate, get_cluster, load_model
from costmodel.network.comm_grouped import GroupedComm
from costmodel.network.topology import build_topology
from costmodel.step.costs import Knobs, step_costs
from costmodel.step.estimate import comm_model, step_context

NAMES = ("gpipe", "1f1b", "interleaved-1f1b", "zero-bubble")
RECOMPUTE = ("none", "selective", "full")
COLUMNS = ("step_time_s", "compute_s", "tp_comm_s", "cp_comm_s", "dp_comm_s", "pp_comm_s", "bubble_s",
           "optimizer_s", "parameters_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes",
           "buffers_bytes", "peak_bytes", "num_micro_batches")


def _rows(pp: int, *, cp_values: tuple[int, ...], seed: int, n: int = 600) -> dict[str, np.ndarray]:
    """Random valid-ish rows of depth pp (4 nodes x 8 GPUs; batch 64)."""
    rng = np.random.default_rng(seed)
    combos = [(dp, tp, cp) for dp, tp, cp in itertools.product((1, 2, 4), (1, 2, 4, 8), cp_values)
              if dp * tp * cp * pp <= 32]
    pick = np.array(combos)[rng.integers(len(combos), size=n)]
    sched = rng.choice([0, 1, 2, 3] if pp > 1 else [0, 1, 3], n)
    return {"dp": pick[:, 0], "tp": pick[:, 1], "cp": pick[:, 2], "mb": rng.choice([1, 2], n),
            "v": np.where(sched == 2, 2, 1), "schedule": sched, "zero": rng.choice([0, 1, 2, 3], n),
            "recompute": rng.choice([0, 1, 2], n), "sp": rng.choice([0, 1], n) * (pick[:, 1] > 1)}


CASES = [
    # (model, seq, cp values, calibration?, user topology?)
    ("llama2-7b", 1024, (1, 2), False, False),
    ("t5-base", 512, (1,), False, False),
    ("gpt3-1.3b", 1024, (1, 2), True, False),
    ("llama2-7b", 1024, (1, 2), False, True),
]


@pytest.mark.parametrize("pp", [1, 2, 4])
@pytest.mark.parametrize("case", CASES, ids=["decoder-cp", "t5", "calibrated", "user-topology"])
def test_grouped_call_equals_one_call_per_degree_group_and_estimate(case, pp) -> None:
    name, seq, cp_values, calibrated, user_topology = case
    model = load_model(name)
    cluster = get_cluster("dgx-a100", nodes=4)
    training = TrainingSpec(global_batch_size=64, seq_len=seq)
    calibration = synthetic_profile(gpu=cluster.gpu.name, group_sizes=(2, 4, 8)) if calibrated else None
    topology = (build_topology(get_cluster("dgx-a100", nodes=4, intra_node_topology="cube-mesh"))
                if user_topology else None)
    ctx = step_context(model, cluster, training, calibration=calibration)
    r = _rows(pp, cp_values=cp_values, seed=pp * 10 + len(name))
    keys = np.stack([r["dp"], r["tp"], r["cp"]], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    comms = [comm_model(cluster, ParallelPlan(dp=int(dp), tp=int(tp), pp=pp, cp=int(cp)), topology=topology,
                        calibration=calibration) for dp, tp, cp in uniq]
    knobs = dict(mb=r["mb"], v=r["v"], schedule=r["schedule"], zero=r["zero"], recompute=r["recompute"], sp=r["sp"])
    grouped = step_costs(ctx, Knobs(dp=r["dp"], tp=r["tp"], pp=pp, cp=r["cp"], **knobs),
                         GroupedComm(comms, inverse))
    for g, (dp, tp, cp) in enumerate(uniq.tolist()):
        rows = np.flatnonzero(inverse == g)
        one = step_costs(ctx, Knobs(dp=dp, tp=tp, pp=pp, cp=cp, **{k: v[rows] for k, v in knobs.items()}), comms[g])
        for col in COLUMNS:
            np.testing.assert_allclose(grouped[col][rows], np.broadcast_to(one[col], rows.shape), rtol=1e-12,
                                       atol=0, err_msg=f"{col} of group dp{dp}-tp{tp}-cp{cp}")
    checked = 0
    for i in np.random.default_rng(pp).permutation(len(inverse))[:25]:
        try:
            plan = ParallelPlan(dp=int(r["dp"][i]), tp=int(r["tp"][i]), pp=pp, cp=int(r["cp"][i]),
                                micro_batch_size=int(r["mb"][i]), virtual_stages=int(r["v"][i]),
                                schedule=NAMES[int(r["schedule"][i])], zero_stage=int(r["zero"][i]),
                                recompute=RECOMPUTE[int(r["recompute"][i])], sequence_parallel=bool(r["sp"][i]))
            est = estimate(model, cluster, training, plan, calibration=calibration, topology=topology)
        except ValueError:   # e.g. interleaved stages that do not divide the layers, m % pp
            continue
        assert grouped["step_time_s"][i] == pytest.approx(est.step_time_s, rel=1e-12), plan
        assert grouped["peak_bytes"][i] == pytest.approx(est.memory.peak_bytes, rel=1e-12), plan
        checked += 1
    assert checked >= 10


def test_grouped_comm_prices_each_row_on_its_own_group() -> None:
    cluster = get_cluster("dgx-a100", nodes=2)
    plans = [ParallelPlan(tp=8, dp=2), ParallelPlan(tp=2, dp=8), ParallelPlan(tp=1, dp=16)]
    comms = [comm_model(cluster, p) for p in plans]
    group = np.array([2, 0, 1, 0, 2])
    grouped = GroupedComm(comms, group)
    nbytes = np.array([1e6, 2e6, 3e6, 4e6, 5e6])
    for axis in ("tp", "dp"):
        got = grouped.time_s(axis, "all_reduce", nbytes)
        want = [float(comms[g].time_s(axis, "all_reduce", b)) for g, b in zip(group, nbytes, strict=True)]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert grouped.time_s("tp", "all_reduce", 1e6)[0] == 0.0   # tp = 1: no traffic
    assert (grouped.link_codes("tp") == -1).sum() == 2
    sub = grouped.take(np.array([1, 2]))
    np.testing.assert_allclose(sub.time_s("dp", "all_gather", 1e6),
                               [float(comms[g].time_s("dp", "all_gather", 1e6)) for g in (0, 1)], rtol=1e-12)
    with pytest.raises(ValueError, match="axis 'xp'"):
        grouped.time_s("xp", "all_reduce", 1.0)


def _plans(world: int, placements) -> list[ParallelPlan]:
    degrees = [1, 2, 4, 8, 16, 32]
    return [ParallelPlan(dp=world // (tp * pp * cp), tp=tp, pp=pp, cp=cp, placement=pl)
            for tp, pp, cp in itertools.product(degrees[:4], degrees, degrees[:3])
            if world % (tp * pp * cp) == 0 for pl in placements]


LINK_CASES = [
    # (cluster preset, nodes, intra-node topology, calibrated?)
    ("dgx-a100", 4, None, False),
    ("dgx-h100", 16, None, False),
    ("dgx-a100", 4, "cube-mesh", False),
    ("dgx-a100", 2, None, True),
]


@pytest.mark.parametrize("case", LINK_CASES, ids=["a100x4", "h100x16", "cube-mesh", "calibrated"])
def test_grouped_comm_equals_each_comm_model_bit_for_bit(case) -> None:
    """The LinkTable expression (every GroupLink at once) returns the very float each row's own
    CommModel returns, for every axis and collective, on flat, hierarchical and one-rank groups; a
    calibrated server's groups go through their CommModel (measured curves)."""
    preset, nodes, intra, calibrated = case
    cluster = get_cluster(preset, nodes=nodes, **({"intra_node_topology": intra} if intra else {}))
    topology = build_topology(cluster) if intra else None
    calibration = synthetic_profile(gpu=cluster.gpu.name, group_sizes=(2, 4, 8)) if calibrated else None
    plans = _plans(cluster.num_gpus, (("tp", "cp", "dp", "pp"), ("tp", "cp", "pp", "dp"), ("dp", "pp", "tp", "cp")))
    comms = [comm_model(cluster, p, topology=topology, calibration=calibration) for p in plans]
    rng = np.random.default_rng(len(plans))
    group = rng.integers(len(comms), size=2000)
    grouped = GroupedComm(comms, group)
    nbytes = np.exp(rng.uniform(np.log(1e3), np.log(1e11), size=group.size)).round()
    picked: set[str] = set()
    for axis in ("tp", "cp", "dp", "pp"):
        picked |= {comms[g].algorithm(axis, "all_reduce", float(b)) for g, b in zip(group[:300], nbytes[:300], strict=True)}
        for op in ("all_reduce", "reduce_scatter", "all_gather", "send_recv", "all_to_all"):
            got = grouped.time_s(axis, op, nbytes)
            want = np.array([float(comms[g].time_s(axis, op, float(b))) for g, b in zip(group, nbytes, strict=True)])
            np.testing.assert_array_equal(got, want, err_msg=f"{axis} {op}")
        sub = grouped.take(np.arange(0, group.size, 7))
        np.testing.assert_array_equal(sub.time_s(axis, "all_reduce", nbytes[::7]),
                                      grouped.time_s(axis, "all_reduce", nbytes)[::7])
    # every pricing path is exercised: ring, tree, hierarchical; measured curves where calibrated
    assert {"ring", "tree", "hierarchical", "none"} <= picked if not calibrated else "measured" in picked, picked
