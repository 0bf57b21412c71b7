"""Placement of mesh axes on the cluster graph: groups, links used, bottlenecks and link sharing."""

from __future__ import annotations

import numpy as np
import pytest

from costmodel import ParallelPlan, get_cluster
from costmodel.network.collectives import algorithm_times_s
from costmodel.network.comm import build_comm_model
from costmodel.network.placement import axis_groups, candidate_placements, place_axis
from costmodel.network.topology import build_topology


def test_axis_groups_follow_placement_order() -> None:
    plan = ParallelPlan(tp=2, dp=2, pp=2)
    assert axis_groups(plan, "tp").tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert axis_groups(plan, "dp").tolist() == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert axis_groups(plan, "pp").tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]
    flipped = ParallelPlan(tp=2, dp=2, pp=2, placement=("dp", "tp", "cp", "pp"))
    assert axis_groups(flipped, "tp").tolist() == [[0, 2], [1, 3], [4, 6], [5, 7]]
    for axis in ("tp", "dp", "pp", "cp"):  # every rank in exactly one group of each axis
        assert sorted(axis_groups(plan, axis).ravel().tolist()) == list(range(8))


def test_tp8_in_a_dgx_node_uses_only_nvswitch_and_no_nic() -> None:
    cluster = get_cluster("dgx-a100", nodes=2)
    g = build_comm_model(cluster, ParallelPlan(tp=8, dp=2)).links["tp"]
    assert not g.crosses_nodes
    assert g.link_kinds == ("nvlink3",)
    topo = build_topology(cluster)
    assert all(topo.graph.nodes[n]["kind"] != "nic" for e in g.edges for n in e)
    assert g.bw_bytes_per_s == cluster.intra_node_link.bw_bytes_per_s
    assert g.latency_s == pytest.approx(cluster.intra_node_link.latency_s)


def test_tp_spanning_two_nodes_is_priced_on_the_inter_node_link() -> None:
    cluster = get_cluster("dgx-a100", nodes=2)
    inside = build_comm_model(cluster, ParallelPlan(tp=8, dp=2))
    across = build_comm_model(cluster, ParallelPlan(tp=16))
    g = across.links["tp"]
    assert g.crosses_nodes and g.num_servers == 2 and g.ranks_per_server == 8
    assert g.bw_bytes_per_s == cluster.inter_node_link.bw_bytes_per_s
    assert cluster.inter_node_link.name in g.link_kinds
    assert g.latency_s == pytest.approx(cluster.inter_node_link.latency_s)
    assert across.time_s("tp", "all_reduce", 1e8) > 1.5 * inside.time_s("tp", "all_reduce", 1e8)
    ring = algorithm_times_s(g, "all_reduce", 1e8)["ring"]
    assert ring == pytest.approx(2 * 15 / 16 * 1e8 / g.bw_bytes_per_s + 2 * 15 * g.latency_s)


def test_eight_dp_groups_share_one_nic_per_node() -> None:
    one_nic = get_cluster("dgx-a100", nodes=2, nics_per_node=1)
    nic_bw = one_nic.inter_node_link.bw_bytes_per_s
    g = build_comm_model(one_nic, ParallelPlan(tp=8, dp=2)).links["dp"]
    assert g.num_groups == 8 and g.max_sharing == 8
    assert g.bw_bytes_per_s == pytest.approx(nic_bw / 8)


def test_rail_optimized_nic_per_gpu_does_not_share() -> None:
    rails = get_cluster("dgx-a100", nodes=2)
    g = build_comm_model(rails, ParallelPlan(tp=8, dp=2)).links["dp"]
    assert g.num_groups == 8 and g.max_sharing == 1
    assert g.bw_bytes_per_s == pytest.approx(rails.inter_node_link.bw_bytes_per_s)
    assert "uplink" not in g.link_kinds  # same-rail traffic stays on its rail switch


def test_leaf_spine_oversubscription_halves_the_cross_leaf_share() -> None:
    plan = ParallelPlan(tp=8, dp=2)
    full = build_comm_model(get_cluster("dgx1-v100", nodes=2), plan).links["dp"]
    half = build_comm_model(get_cluster("dgx1-v100", nodes=2, oversubscription=2.0), plan).links["dp"]
    assert half.bw_bytes_per_s == pytest.approx(full.bw_bytes_per_s / 2)


def test_pp_flows_are_stage_to_next_stage() -> None:
    cluster = get_cluster("dgx-a100", nodes=2)
    g = build_comm_model(cluster, ParallelPlan(tp=8, pp=2)).links["pp"]
    assert g.crosses_nodes and g.max_sharing == 1
    assert len(g.edges) == len(build_topology(cluster).route(0, 8))


def test_hierarchical_stages_are_found_for_even_spreads() -> None:
    g = build_comm_model(get_cluster("dgx-a100", nodes=4), ParallelPlan(dp=32)).links["dp"]
    assert g.intra is not None and g.inter is not None
    assert g.intra.link_kinds == ("nvlink3",)
    assert g.inter.max_sharing == 1  # 8 sub-rings, one per rail


def test_candidate_placements_skip_idle_axes() -> None:
    assert candidate_placements(ParallelPlan()) == [("tp", "cp", "dp", "pp")]
    cands = candidate_placements(ParallelPlan(tp=2, dp=4))
    assert len(cands) == 2 and cands[0][:2] == ("tp", "dp")
    assert len(candidate_placements(ParallelPlan(tp=2, dp=2, pp=2))) == 6


def test_plan_bigger_than_topology_is_rejected() -> None:
    topo = build_topology(get_cluster("dgx-a100"))
    with pytest.raises(ValueError, match="needs 16 GPUs"):
        place_axis(topo, ParallelPlan(dp=16), "dp")


def test_snake_ring_keeps_inter_node_hops_on_one_rail() -> None:
    g = build_comm_model(get_cluster("dgx-a100", nodes=2), ParallelPlan(tp=16)).links["tp"]
    assert "uplink" not in g.link_kinds
    assert np.isfinite(g.bw_bytes_per_s)
