"""The CLI's interconnect flags (--inter-node-bw, --intra-node-bw, --oversubscription, --topology)."""

from __future__ import annotations

from pathlib import Path

import pytest

from costmodel import ParallelPlan
from costmodel.network.comm import build_comm_model
from planner.cli import build_parser, build_specs, main

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "topology-two-boxes.yaml"


def _specs(*flags: str):
    args = build_parser().parse_args(["estimate", "--model", "gpt3-1.3b", *flags])
    return args, build_specs(args)


def test_bandwidth_flags_change_the_cluster() -> None:
    args, (_, cluster, _) = _specs("--nodes", "2", "--inter-node-bw", "400Gbps", "--intra-node-bw", "900GB/s",
                                   "--oversubscription", "2:1")
    assert cluster.inter_node_link.bw_bytes_per_s == pytest.approx(50e9)
    assert cluster.intra_node_link.bw_bytes_per_s == pytest.approx(900e9)
    assert cluster.oversubscription == 2.0 and args.topology_graph is None
    _, (_, base, _) = _specs("--nodes", "2")
    plan = ParallelPlan(tp=8, dp=2)
    assert (build_comm_model(cluster, plan).time_s("dp", "all_reduce", 1e9)
            < build_comm_model(base, plan).time_s("dp", "all_reduce", 1e9))


def test_topology_flag_sizes_the_cluster_and_returns_the_graph() -> None:
    args, (_, cluster, training) = _specs("--topology", str(EXAMPLE))
    topo = args.topology_graph
    assert (cluster.num_nodes, cluster.gpus_per_node, cluster.name) == (2, 4, "two-pcie-boxes")
    assert training.global_batch_size == 8 * 8
    comm = build_comm_model(cluster, ParallelPlan(tp=4, dp=2), topology=topo)
    assert comm.links["tp"].link_kinds == ("link",) and not comm.links["tp"].crosses_nodes
    dp = comm.links["dp"]
    assert dp.crosses_nodes and dp.max_sharing == 4  # four DP groups share each box's single NIC
    assert dp.bw_bytes_per_s == pytest.approx(25e9 / 4)


@pytest.mark.parametrize("flags, needle", [
    (["--inter-node-bw", "fast"], "--inter-node-bw"),
    (["--intra-node-bw", "0GB/s"], "--intra-node-bw"),
    (["--oversubscription", "0.5"], "--oversubscription"),
    (["--topology", "missing.yaml"], "does not exist"),
    (["--topology", str(EXAMPLE), "--inter-node-bw", "400Gbps"], "cannot be combined"),
])
def test_bad_flags_are_one_line_errors_naming_the_flag(flags, needle, capsys) -> None:
    assert main(["estimate", "--model", "gpt3-1.3b", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paraplan: error:") and needle in err and "\n" not in err
