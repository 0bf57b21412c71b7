"""Collective algorithms on placed groups: formulas, NCCL-style choice, hierarchy, invariants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from costmodel import ParallelPlan, get_cluster
from costmodel.network.collectives import algorithm_times_s, collective_time_s
from costmodel.network.comm import build_comm_model
from costmodel.network.whatif import apply_interconnect


def test_ring_all_reduce_matches_formula_on_a_uniform_ring() -> None:
    cluster = get_cluster("dgx-h100")
    bw, alpha = cluster.intra_node_link.bw_bytes_per_s, cluster.intra_node_link.latency_s
    g = build_comm_model(cluster, ParallelPlan(tp=8)).links["tp"]
    for nbytes in (1e3, 1e6, 1e9):
        ring = algorithm_times_s(g, "all_reduce", nbytes)["ring"]
        assert ring == pytest.approx(2 * 7 / 8 * nbytes / bw + 2 * 7 * alpha, rel=1e-12)
        rs = algorithm_times_s(g, "reduce_scatter", nbytes)["ring"]
        assert rs == pytest.approx(7 / 8 * nbytes / bw + 7 * alpha, rel=1e-12)


def test_cheapest_algorithm_is_chosen() -> None:
    comm = build_comm_model(get_cluster("dgx-a100", nodes=16), ParallelPlan(dp=128))
    g = comm.links["dp"]
    for nbytes in (1e3, 1e6, 1e9):
        times = algorithm_times_s(g, "all_reduce", nbytes)
        assert collective_time_s(g, "all_reduce", nbytes) == pytest.approx(min(times.values()))
    assert comm.algorithm("dp", "all_reduce", 1e3) == "tree"  # latency-bound at 128 ranks
    one_node = build_comm_model(get_cluster("dgx-a100"), ParallelPlan(tp=8))
    assert one_node.algorithm("tp", "all_reduce", 1e9) == "ring"


@pytest.mark.parametrize("nodes", [4, 16, 64])
def test_hierarchical_beats_flat_ring_across_nodes(nodes: int) -> None:
    comm = build_comm_model(get_cluster("dgx-a100", nodes=nodes), ParallelPlan(dp=8 * nodes))
    times = algorithm_times_s(comm.links["dp"], "all_reduce", 1e9)
    assert times["hierarchical"] < times["ring"]
    assert comm.algorithm("dp", "all_reduce", 1e9) == "hierarchical"


def test_single_rank_groups_cost_nothing_and_p2p_is_alpha_beta() -> None:
    cluster = get_cluster("dgx-a100", nodes=2)
    comm = build_comm_model(cluster, ParallelPlan(tp=8, pp=2))
    assert comm.time_s("dp", "all_reduce", 1e9) == 0.0
    nic = cluster.inter_node_link
    assert comm.time_s("pp", "send_recv", 1e8) == pytest.approx(nic.latency_s + 1e8 / nic.bw_bytes_per_s)


def test_all_to_all_across_nodes_is_bound_by_the_nic_share() -> None:
    cluster = get_cluster("dgx-a100", nodes=2)
    comm = build_comm_model(cluster, ParallelPlan(dp=16))
    t = comm.time_s("dp", "all_to_all", 1e9)
    nic_part = 8 / 16 * 1e9 / cluster.inter_node_link.bw_bytes_per_s
    assert nic_part < t < 1.1 * nic_part + 1e-3


def test_vectorised_sizes_match_scalars() -> None:
    comm = build_comm_model(get_cluster("dgx-a100", nodes=4), ParallelPlan(tp=8, dp=4))
    sizes = np.logspace(3, 9, 7)
    for op in ("all_reduce", "reduce_scatter", "all_gather", "all_to_all"):
        vec = comm.time_s("dp", op, sizes)
        assert vec.shape == sizes.shape
        assert np.allclose(vec, [comm.time_s("dp", op, float(s)) for s in sizes])


def test_unknown_op_is_a_value_error() -> None:
    g = build_comm_model(get_cluster("dgx-a100"), ParallelPlan(tp=8)).links["tp"]
    with pytest.raises(ValueError, match="op 'broadcast'"):
        algorithm_times_s(g, "broadcast", 1e6)


@pytest.mark.parametrize("name", ["dgx-a100", "dgx1-v100", "l40s-pcie"])
def test_more_bandwidth_is_never_slower(name: str) -> None:
    base = get_cluster(name, nodes=4)
    plans = [ParallelPlan(tp=tp, dp=32 // tp // pp, pp=pp) for tp, pp in itertools.product((1, 2, 8), (1, 2))]
    sizes = np.logspace(3, 9, 4)
    for plan in plans:
        slow = build_comm_model(base, plan)
        for faster in (apply_interconnect(base, inter_node_bw=2 * base.inter_node_link.bw_bytes_per_s),
                       apply_interconnect(base, intra_node_bw=2 * base.intra_node_link.bw_bytes_per_s)):
            fast = build_comm_model(faster, plan)
            for axis, op in itertools.product(("tp", "dp", "pp"), ("all_reduce", "all_gather", "send_recv")):
                assert np.all(fast.time_s(axis, op, sizes) <= slow.time_s(axis, op, sizes) * (1 + 1e-12))
