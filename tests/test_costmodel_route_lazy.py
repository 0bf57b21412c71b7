"""Preset topologies without the graph: closed-form named routes == the graph walk's, the graph built
only on demand, lazily named hops (route_table.Hops) equal to the tuple they stand for."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from test_costmodel_route_table import FABRICS, _pair

from costmodel import ParallelPlan, get_cluster
from costmodel.network.comm import build_comm_model
from costmodel.network.placement import PathStats, price_flows, walk_flows
from costmodel.network.route_table import Hops
from costmodel.network.topology import Topology, build_topology


@pytest.mark.parametrize(("preset", "nodes", "over", "npl"), FABRICS)
def test_named_routes_and_link_attrs_equal_the_graph_walk(preset: str, nodes: int, over: dict, npl: int) -> None:
    fast = build_topology(get_cluster(preset, nodes=nodes, **over), nodes_per_leaf=npl)
    fast = Topology._lazy(fast._make_graph, name="fresh", gpus=fast.gpus, servers=fast.servers,
                          gpu_server=fast.gpu_server, route_table=fast.route_table)  # not shared with other tests
    walk = Topology(fast._make_graph(), name="walk")
    for a in range(fast.num_gpus):
        for b in range(fast.num_gpus):
            assert fast.route(a, b) == walk.route(a, b), (a, b)
    assert fast._graph is None  # every route named without building the graph
    assert fast.link_attrs == walk.link_attrs


def test_big_preset_prices_plans_without_building_its_graph() -> None:
    cluster = get_cluster("dgx-h100", nodes=2048)
    topo = build_topology(cluster)
    comm = build_comm_model(cluster, ParallelPlan(tp=8, pp=16, dp=128), topology=topo)
    assert comm.links["dp"].num_groups == 128 and comm.links["dp"].crosses_nodes
    assert topo._graph is None
    assert topo.server_of(16383) == "n2047" and topo.gpus[16383] == "n2047/gpu7"


def test_graph_is_built_on_first_use_and_matches_the_preset() -> None:
    cluster = get_cluster("dgx-a100", nodes=3, nics_per_node=2)
    topo = build_topology(cluster)
    assert topo._graph is None
    g = topo.graph
    assert g is topo.graph  # built once
    gpus = sorted((n for n, d in g.nodes(data=True) if d["kind"] == "gpu"), key=lambda n: g.nodes[n]["index"])
    assert tuple(gpus) == topo.gpus
    assert [topo.servers.index(g.nodes[n]["server"]) for n in gpus] == topo.gpu_server.tolist()
    assert topo.edge("n0/gpu0", "n0/nvswitch")["bw_bytes_per_s"] == cluster.intra_node_link.bw_bytes_per_s


def test_cube_mesh_is_lazy_too_and_still_checks_its_servers() -> None:
    topo = build_topology(get_cluster("dgx1-v100", nodes=2))
    assert topo.route_table is not None and topo._graph is None
    with pytest.raises(ValueError, match="gpus_per_node=8"):
        build_topology(get_cluster("dgx1-v100", gpus_per_node=4))


def test_flows_to_self_load_nothing() -> None:
    fast, walk = _pair("dgx-a100", 2, {}, 1)
    src, dst = np.array([0, 3, 9, 9]), np.array([0, 3, 9, 1])
    flows = list(zip(src.tolist(), dst.tolist(), strict=True))
    assert price_flows(fast, (src, dst)) == walk_flows(walk, flows)
    assert price_flows(fast, (src[:3], dst[:3])) == walk_flows(walk, flows[:3]) == PathStats(float("inf"), 0.0, 0, ())


def test_hops_stand_for_their_tuple() -> None:
    fast, walk = _pair("dgx-a100", 2, {"nics_per_node": 4}, 1)
    plan = ParallelPlan(tp=2, dp=8)
    lazy = build_comm_model(get_cluster("dgx-a100", nodes=2), plan, topology=fast).links["dp"].edges
    eager = build_comm_model(get_cluster("dgx-a100", nodes=2), plan, topology=walk).links["dp"].edges
    assert isinstance(lazy, Hops) and isinstance(eager, tuple)
    assert lazy == eager and eager == lazy and hash(lazy) == hash(eager)
    assert len(lazy) == len(eager) and lazy[0] == eager[0] and list(lazy) == list(eager)
    assert lazy != eager[:-1] and lazy != "not hops"
    back = pickle.loads(pickle.dumps(lazy))
    assert type(back) is tuple and back == eager


@pytest.mark.parametrize(("preset", "nodes", "over", "npl"), FABRICS)
def test_single_routes_equal_the_vectorized_rows(preset: str, nodes: int, over: dict, npl: int) -> None:
    table = build_topology(get_cluster(preset, nodes=nodes, **over), nodes_per_leaf=npl).route_table
    n = table.num_servers * table.gpus_per_node
    rng = np.random.default_rng(n)
    src, dst = rng.integers(0, n, 300), rng.integers(0, n, 300)
    rows = table.routes(src, dst)
    for a, b, row in zip(src.tolist(), dst.tolist(), rows, strict=True):
        assert table.route_ids(a, b) == row[row >= 0].tolist()


def _random_fabric(rng: np.random.Generator) -> tuple[dict, int]:
    intra = str(rng.choice(["nvswitch", "pcie", "none", "cube-mesh"]))
    gpn = 8 if intra == "cube-mesh" else int(rng.choice([2, 4, 8]))
    over = {"intra_node_topology": intra, "gpus_per_node": gpn, "nics_per_node": int(rng.choice([1, 2, 3, 4, 8])),
            "network": str(rng.choice(["rail-optimized", "fat-tree", "leaf-spine"])),
            "oversubscription": float(rng.choice([1.0, 1.5, 4.0]))}
    return over, int(rng.integers(1, 4))


@pytest.mark.parametrize("seed", range(12))
def test_random_fabrics_and_plans_price_as_by_graph_walk(seed: int) -> None:
    """Seeded random fabrics (server fabric, GPUs and NICs per server, network, oversubscription,
    servers per leaf) and plans: closed form == graph walk for every GroupLink and time."""
    rng = np.random.default_rng(100 + seed)
    over, npl = _random_fabric(rng)
    nodes = int(rng.integers(1, 7))
    cluster = get_cluster("dgx-a100", nodes=nodes, **over)
    fast = build_topology(cluster, nodes_per_leaf=npl)
    walk = Topology(fast.graph, name="walk")
    world = cluster.num_gpus
    divisors = [d for d in range(1, world + 1) if world % d == 0]
    for _ in range(10):
        tp, cp, pp = (int(rng.choice(divisors)) for _ in range(3))
        if world % (tp * cp * pp):
            continue
        order = tuple(rng.permutation(["tp", "cp", "dp", "pp"]).tolist())
        plan = ParallelPlan(tp=tp, cp=cp, pp=pp, dp=world // (tp * cp * pp), placement=order)
        a = build_comm_model(cluster, plan, topology=fast)
        b = build_comm_model(cluster, plan, topology=walk)
        assert a.links == b.links, (over, npl, plan)
        for axis in ("tp", "cp", "dp", "pp"):
            for op in ("all_reduce", "reduce_scatter", "all_to_all", "send_recv"):
                assert a.time_s(axis, op, 3e7) == b.time_s(axis, op, 3e7)
