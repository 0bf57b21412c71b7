"""Cluster graphs: presets, user files, validation errors, units and interconnect what-ifs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from costmodel import get_cluster, list_clusters
from costmodel.network.topology import build_topology, load_topology
from costmodel.network.units import parse_bandwidth, parse_latency
from costmodel.network.whatif import apply_interconnect, cluster_for_topology, parse_oversubscription


@pytest.mark.parametrize("name", list_clusters())
@pytest.mark.parametrize("nodes", [1, 3])
def test_every_preset_builds_a_connected_graph(name: str, nodes: int) -> None:
    cluster = get_cluster(name, nodes=nodes)
    topo = build_topology(cluster)
    assert topo.num_gpus == cluster.num_gpus
    assert len(topo.servers) == nodes
    last = topo.num_gpus - 1
    route = topo.route(0, last)
    assert route[0][0] == topo.gpus[0] and route[-1][1] == topo.gpus[last]
    for u, v in route:  # consecutive hops chain
        assert topo.graph.has_edge(u, v)


def test_dgx_intra_server_route_uses_only_nvswitch() -> None:
    topo = build_topology(get_cluster("dgx-a100", nodes=2))
    for b in range(1, 8):
        kinds = {topo.edge(*e)["kind"] for e in topo.route(0, b)}
        assert kinds == {"nvlink3"}
    inter = topo.route(0, 8)
    assert any(topo.graph.nodes[v]["kind"] == "nic" for _, v in inter)
    assert {topo.edge(*e)["kind"] for e in inter} >= {"ib-hdr-200"}


def test_cube_mesh_neighbours_and_two_hop_paths() -> None:
    topo = build_topology(get_cluster("dgx1-v100"))
    g0 = topo.gpus[0]
    peers = {n for n in topo.graph.neighbors(g0) if topo.graph.nodes[n]["kind"] == "gpu"}
    assert peers == {topo.gpus[i] for i in (1, 2, 3, 4)}
    assert len(topo.route(0, 5)) == 2  # 0 -> 1 or 4 -> 5
    cluster = get_cluster("dgx1-v100")
    assert topo.edge(*topo.route(0, 1)[0])["bw_bytes_per_s"] == cluster.intra_node_link.bw_bytes_per_s / 4


def test_pcie_box_gpus_and_nics_share_the_host_bridge() -> None:
    topo = build_topology(get_cluster("l40s-pcie", nodes=2))
    assert [v for _, v in topo.route(0, 1)] == ["n0/pcie", "n0/gpu1"]
    hops = [v for _, v in topo.route(0, 8)]
    assert hops[:2] == ["n0/pcie", "n0/nic0"]


def test_cube_mesh_needs_eight_gpus() -> None:
    with pytest.raises(ValueError, match="gpus_per_node=8"):
        build_topology(get_cluster("dgx1-v100", gpus_per_node=4))


def _write(tmp_path, data: dict) -> str:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(data))
    return str(path)


def _two_boxes() -> dict:
    nodes, links = [{"id": "spine", "kind": "switch"}], []
    for s in ("a", "b"):
        nodes += [{"id": f"{s}/sw", "kind": "switch", "server": s}, {"id": f"{s}/nic", "kind": "nic", "server": s}]
        for j in range(2):
            nodes.append({"id": f"{s}/g{j}", "kind": "gpu", "server": s})
            links.append({"a": f"{s}/g{j}", "b": f"{s}/sw", "bw": "300GB/s", "latency": "2.5us"})
        links += [{"a": f"{s}/sw", "b": f"{s}/nic", "bw": "400Gbps"},
                  {"a": f"{s}/nic", "b": "spine", "bw": "400Gbps", "latency": "5us"}]
    return {"name": "two-boxes", "nodes": nodes, "links": links}


def test_user_file_loads_routes_and_sizes_the_cluster(tmp_path) -> None:
    topo = load_topology(_write(tmp_path, _two_boxes()))
    assert topo.num_gpus == 4 and topo.servers == ("a", "b")
    assert topo.graph.nodes["a/g0"]["nic"] == "a/nic"
    route = topo.route(0, 2)
    assert min(topo.edge(*e)["bw_bytes_per_s"] for e in route) == pytest.approx(50e9)
    assert sum(topo.edge(*e)["latency_s"] for e in route) == pytest.approx(2.5e-6 * 2 + 10e-6)
    cluster, same = cluster_for_topology(get_cluster("dgx-a100"), topo)
    assert (cluster.num_nodes, cluster.gpus_per_node, same) == (2, 2, topo)


def test_user_file_with_zero_bandwidth_names_the_link(tmp_path) -> None:
    data = _two_boxes()
    data["links"][0]["bw"] = "0Gbps"
    with pytest.raises(ValueError, match="a/g0-a/sw.*zero bandwidth"):
        load_topology(_write(tmp_path, data))


def test_user_file_with_unlinked_gpu_names_it(tmp_path) -> None:
    data = _two_boxes()
    data["links"] = [ln for ln in data["links"] if ln["a"] != "b/g1"]
    with pytest.raises(ValueError, match="GPU 'b/g1' has no link"):
        load_topology(_write(tmp_path, data))


def test_user_file_with_missing_path_names_both_gpus(tmp_path) -> None:
    data = _two_boxes()
    data["links"] = [ln for ln in data["links"] if ln["b"] != "spine"]
    with pytest.raises(ValueError, match="no path from GPU 'a/g0' to GPU 'b/g0'"):
        load_topology(_write(tmp_path, data))


def test_user_file_errors_name_the_problem(tmp_path) -> None:
    data = _two_boxes()
    data["links"].append({"a": "a/g0", "b": "nowhere", "bw": "1GB/s"})
    with pytest.raises(ValueError, match="undeclared node 'nowhere'"):
        load_topology(_write(tmp_path, data))
    with pytest.raises(ValueError, match="does not exist"):
        load_topology(tmp_path / "missing.yaml")


def test_units() -> None:
    assert parse_bandwidth("400Gbps") == pytest.approx(50e9)
    assert parse_bandwidth("400 Gb/s") == pytest.approx(50e9)
    assert parse_bandwidth("50GB/s") == pytest.approx(50e9)
    assert parse_bandwidth("1GiB/s") == 2**30
    assert parse_bandwidth(1e9) == 1e9
    assert parse_latency("5us") == pytest.approx(5e-6)
    with pytest.raises(ValueError, match="--inter-node-bw"):
        parse_bandwidth("fast", what="--inter-node-bw")
    with pytest.raises(ValueError, match="zero"):
        parse_bandwidth("0Gbps")


def test_interconnect_what_ifs() -> None:
    base = get_cluster("dgx-a100", nodes=2)
    faster = apply_interconnect(base, inter_node_bw="400Gbps", oversubscription="2:1")
    assert faster.inter_node_link.bw_bytes_per_s == pytest.approx(50e9)
    assert faster.inter_node_link.latency_s == base.inter_node_link.latency_s
    assert faster.oversubscription == 2.0
    assert apply_interconnect(base) is base
    assert parse_oversubscription("3") == 3.0
    with pytest.raises(ValueError, match="--oversubscription"):
        parse_oversubscription("1:2")
    with pytest.raises(ValueError, match="--intra-node-bw"):
        apply_interconnect(base, intra_node_bw="-3GB/s")


def test_graph_walk_breaks_ties_the_same_under_any_hash_seed() -> None:
    """Cube-mesh servers have equal-cost two-hop paths; the walk's pick (and so the priced TP ring)
    must not depend on PYTHONHASHSEED (it did while subgraphs iterated a set of node names)."""
    code = ("from costmodel import ParallelPlan, get_cluster; from costmodel.network.comm import build_comm_model; "
            "from costmodel.network.topology import Topology, build_topology; c = get_cluster('dgx1-v100', nodes=2); "
            "walk = Topology(build_topology(c).graph); "
            "print(build_comm_model(c, ParallelPlan(tp=8, dp=2), topology=walk).links['tp'])")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "5")}
    assert len(outs) == 1 and "GroupLink" in outs.pop()
