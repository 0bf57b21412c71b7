"""Closed-form routes of preset graphs (costmodel.route_table) == the graph walk, on every preset fabric."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from costmodel import ParallelPlan, get_cluster
from costmodel.comm import build_comm_model
from costmodel.placement import AXES, axis_stride, place_axis, price_flows, walk_flows
from costmodel.topology import Topology, build_topology

FABRICS = [
    ("dgx-a100", 4, {}, 1),
    ("dgx-a100", 3, {"nics_per_node": 1}, 1),
    ("dgx-a100", 4, {"nics_per_node": 4}, 1),
    ("dgx-a100", 4, {"nics_per_node": 2, "oversubscription": 2.0}, 1),
    ("dgx-a100", 5, {"network": "fat-tree"}, 1),
    ("dgx-a100", 5, {"network": "fat-tree", "nics_per_node": 2, "oversubscription": 3.0}, 2),
    ("dgx-a100", 4, {"network": "leaf-spine", "nics_per_node": 4}, 4),
    ("dgx-a100", 4, {"intra_node_topology": "pcie", "nics_per_node": 2}, 1),
    ("dgx-a100", 4, {"intra_node_topology": "none", "network": "leaf-spine"}, 3),
    ("dgx-a100", 2, {"intra_node_topology": "pcie", "gpus_per_node": 4, "nics_per_node": 1,
                     "network": "fat-tree"}, 1),
]


def _pair(preset: str, nodes: int, over: dict, npl: int) -> tuple[Topology, Topology]:
    fast = build_topology(get_cluster(preset, nodes=nodes, **over), nodes_per_leaf=npl)
    return fast, Topology(fast.graph, name="walk")  # same graph, no route table: graph walk


@pytest.mark.parametrize(("preset", "nodes", "over", "npl"), FABRICS)
def test_random_flows_priced_as_by_graph_walk(preset: str, nodes: int, over: dict, npl: int) -> None:
    fast, walk = _pair(preset, nodes, over, npl)
    assert fast.route_table is not None and walk.route_table is None
    rng = np.random.default_rng(nodes)
    for count in (1, 3, 17, 200):
        src = rng.integers(0, fast.num_gpus, count)
        dst = rng.integers(0, fast.num_gpus, count)
        flows = list(zip(src.tolist(), dst.tolist(), strict=True))
        assert price_flows(fast, (src, dst)) == walk_flows(walk, flows)


@pytest.mark.parametrize(("preset", "nodes", "over", "npl"), FABRICS)
def test_every_axis_shape_placed_as_by_graph_walk(preset: str, nodes: int, over: dict, npl: int) -> None:
    fast, walk = _pair(preset, nodes, over, npl)
    world = fast.num_gpus
    divisors = [d for d in range(1, world + 1) if world % d == 0]
    for tp, pp in itertools.product(divisors, divisors):
        if world % (tp * pp):
            continue
        for order in (("tp", "cp", "dp", "pp"), ("pp", "dp", "cp", "tp"), ("dp", "tp", "cp", "pp")):
            plan = ParallelPlan(tp=tp, pp=pp, dp=world // (tp * pp), placement=order)
            for axis in AXES:
                assert place_axis(fast, plan, axis) == place_axis(walk, plan, axis), (plan, axis)


def test_groups_depend_only_on_stride_degree_and_world() -> None:
    """The CommModel cache key: two plans whose axis has the same (stride, degree, world) get the
    same GroupLink from the graph walk."""
    walk = Topology(build_topology(get_cluster("dgx-a100", nodes=4, nics_per_node=2)).graph, name="walk")
    a = ParallelPlan(tp=2, cp=2, dp=4, pp=2, placement=("tp", "cp", "dp", "pp"))
    b = ParallelPlan(tp=4, cp=1, dp=4, pp=2, placement=("tp", "cp", "dp", "pp"))
    assert axis_stride(a, "dp") == axis_stride(b, "dp") == 4
    assert place_axis(walk, a, "dp") == place_axis(walk, b, "dp")
    assert place_axis(walk, a, "pp") == place_axis(walk, b, "pp")


def test_cube_mesh_keeps_the_graph_walk() -> None:
    cluster = get_cluster("dgx-a100", nodes=2, intra_node_topology="cube-mesh")
    topo = build_topology(cluster)
    assert topo.route_table is None
    g = build_comm_model(cluster, ParallelPlan(tp=8, dp=2)).links["tp"]
    assert g.size == 8 and not g.crosses_nodes
