"""Closed-form routes of preset graphs (costmodel.network.route_table) == the graph walk, on every preset fabric."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from costmodel import ParallelPlan, get_cluster
from costmodel.network.comm import build_comm_model
from costmodel.network.placement import AXES, axis_stride, place_axis, price_flows, walk_flows
from costmodel.network.topology import Topology, build_topology

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
    ("dgx1-v100", 3, {}, 1),
    ("dgx1-v100", 4, {"network": "rail-optimized", "nics_per_node": 2, "oversubscription": 2.0}, 1),
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


def test_cube_mesh_routes_come_from_one_servers_walk() -> None:
    """Cube-mesh servers have several equal-cost two-hop paths: the table takes the graph walk's pick
    (found in a one-server graph) and shares it with every server, as the walk does."""
    cluster = get_cluster("dgx-a100", nodes=2, intra_node_topology="cube-mesh")
    topo = build_topology(cluster)
    assert topo.route_table is not None and topo.route_table.mesh is not None
    hops = (topo.route_table.mesh >= 0).sum(axis=2)
    assert hops.max() == 2 and (hops[np.arange(8), (np.arange(8) + 4) % 8] == 1).all()  # i <-> i+4 direct
    g = build_comm_model(cluster, ParallelPlan(tp=8, dp=2)).links["tp"]
    assert g.size == 8 and not g.crosses_nodes
    assert g.bw_bytes_per_s == cluster.intra_node_link.bw_bytes_per_s / 4 / g.max_sharing

OPS = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "send_recv")


@pytest.mark.parametrize(("preset", "nodes", "over", "npl"), [
    *FABRICS[::3],
    ("dgx-h100", 16, {"network": "fat-tree", "oversubscription": 2.0}, 4),
    ("dgx-h100", 12, {"nics_per_node": 2, "oversubscription": 1.5}, 1),
])
def test_comm_model_times_equal_the_graph_walk(preset: str, nodes: int, over: dict, npl: int) -> None:
    """Every GroupLink and every collective time of the closed-form path equals the graph walk's,
    exactly, for plans of several degrees, cp included, and placements."""
    fast, walk = _pair(preset, nodes, over, npl)
    cluster = get_cluster(preset, nodes=nodes, **over)
    world = fast.num_gpus
    sizes = np.array([1e3, 3e6, 5e9])
    rng = np.random.default_rng(world)
    checked = 0
    for tp, cp, pp in itertools.product((1, 2, 4, 8), (1, 2), (1, 2, 3, 4)):
        if world % (tp * cp * pp):
            continue
        for order in (("tp", "cp", "dp", "pp"), ("pp", "dp", "cp", "tp"), ("cp", "tp", "pp", "dp")):
            plan = ParallelPlan(tp=tp, cp=cp, pp=pp, dp=world // (tp * cp * pp), placement=order)
            a = build_comm_model(cluster, plan, topology=fast)
            b = build_comm_model(cluster, plan, topology=walk)
            assert a.links == b.links, plan
            for axis, op in itertools.product(AXES, OPS):
                assert np.array_equal(a.time_s(axis, op, sizes), b.time_s(axis, op, sizes)), (plan, axis, op)
                nbytes = float(rng.choice(sizes))
                assert a.time_s(axis, op, nbytes) == b.time_s(axis, op, nbytes)
                assert a.algorithm(axis, op, nbytes) == b.algorithm(axis, op, nbytes)
            checked += 1
    assert checked >= 6
