"""CommModel: the interface estimate uses, topology and calibration keyword arguments."""

from __future__ import annotations

import numpy as np
import pytest
from test_costmodel_calibration import ALPHA, BW, _ring_ar, synthetic_profile

from costmodel import ParallelPlan, get_cluster
from costmodel.calibration.profile_spec import CollectivePoint
from costmodel.network.comm import CommModel, all_reduce_time_s, build_comm_model, group_link
from costmodel.network.topology import build_topology


def test_interface_links_and_time() -> None:
    cluster = get_cluster("dgx-a100", nodes=2)
    comm = build_comm_model(cluster, ParallelPlan(tp=8, dp=2))
    assert isinstance(comm, CommModel)
    assert set(comm.links) == {"tp", "cp", "dp", "pp", "ep", "edp"}
    assert comm.links["tp"].size == 8 and comm.links["dp"].size == 2
    assert float(comm.time_s("tp", "all_reduce", 1e6)) > 0
    assert group_link(cluster, ParallelPlan(tp=8, dp=2), "dp").crosses_nodes
    with pytest.raises(ValueError, match="axis 'xp'"):
        comm.time_s("xp", "all_reduce", 1e6)


def test_explicit_topology_is_used_and_placements_are_cached() -> None:
    cluster = get_cluster("dgx-a100", nodes=2)
    topo = build_topology(cluster)
    a = build_comm_model(cluster, ParallelPlan(tp=8, dp=2), topology=topo)
    b = build_comm_model(cluster, ParallelPlan(tp=8, dp=2, zero_stage=1), topology=topo)
    assert a.topology is topo and a.links is b.links


def test_flat_formulas_kept_for_bulk_callers() -> None:
    n = np.array([1, 2, 8])
    t = all_reduce_time_s(1e6, n, 1e9, 1e-5)
    assert t[0] == 0 and t[1] == pytest.approx(1e6 / 1e9 + 2e-5)


def test_calibration_curves_price_groups_inside_the_server() -> None:
    cpu = get_cluster("cpu")  # 4 processes per 'node'
    prof = synthetic_profile(group_sizes=(2, 4))
    comm = build_comm_model(cpu, ParallelPlan(dp=4), calibration=prof)
    assert comm.algorithm("dp", "all_reduce", 1e6) == "measured"
    assert comm.time_s("dp", "all_reduce", 65536.0) == pytest.approx(_ring_ar(65536, 4))
    sizes = np.array([4096.0, 1 << 20])
    assert np.allclose(comm.time_s("dp", "all_reduce", sizes), [_ring_ar(s, 4) for s in sizes])


def test_calibration_fit_prices_unmeasured_group_sizes() -> None:
    cpu = get_cluster("cpu")
    prof = synthetic_profile(group_sizes=(2,))  # fit from 2 ranks, predict 4
    comm = build_comm_model(cpu, ParallelPlan(dp=4), calibration=prof)
    assert comm.links["dp"].bw_bytes_per_s == pytest.approx(BW, rel=1e-6)
    assert comm.links["dp"].latency_s == pytest.approx(ALPHA, rel=1e-6)
    ring = 2 * 3 / 4 * 1e7 / BW + 2 * 3 * ALPHA
    assert comm.time_s("dp", "all_reduce", 1e7) == pytest.approx(ring, rel=1e-6)


def test_calibration_for_another_device_is_ignored() -> None:
    dgx = get_cluster("dgx-a100")
    plain = build_comm_model(dgx, ParallelPlan(tp=4, dp=2))
    calib = build_comm_model(dgx, ParallelPlan(tp=4, dp=2), calibration=synthetic_profile(gpu="cpu"))
    assert calib.calibration is None
    assert calib.time_s("tp", "all_reduce", 1e6) == plain.time_s("tp", "all_reduce", 1e6)


def test_calibrated_send_recv_uses_the_two_rank_curve() -> None:
    cpu = get_cluster("cpu")
    base = synthetic_profile()
    p2p = tuple(CollectivePoint(op="send_recv", group_size=2, nbytes=s, time_s=1e-4 + s / 1e9)
                for s in (1024.0, 1 << 20, 1 << 26))
    prof = base.model_copy(update={"collectives": base.collectives + p2p})
    comm = build_comm_model(cpu, ParallelPlan(pp=4), calibration=prof)
    assert comm.algorithm("pp", "send_recv", 1e6) == "measured"
    assert comm.time_s("pp", "send_recv", float(1 << 20)) == pytest.approx(1e-4 + (1 << 20) / 1e9)
