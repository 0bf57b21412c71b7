"""`paraplan validate --local`: plan selection, scores, the report section, and a real reduced sweep."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from costmodel import ParallelPlan, TrainingSpec, load_model
from costmodel.calibration import CalibrationProfile, CollectivePoint, HostPoint, save_profile
from costmodel.compute import DEFAULT_EFFICIENCY, block_host_ops, block_host_s
from costmodel.constants import efficiency_with_constants
from costmodel.fit_data import local_cluster
from costmodel.profile import ProfileConfig, run_profile
from costmodel.specs import StepMeasurement
from planner import search
from planner.cli import main
from planner.closed_loop import LocalValidation, host_constants, run_local_validation, select_plans
from planner.closed_loop_doc import BEGIN, END, update_part
from planner.closed_loop_metrics import rank_average, regret, spearman

REQUIRED = [
    "plan",
    "measured_step_time_s",
    "predicted_step_time_s",
    "measured_peak_bytes",
    "predicted_peak_bytes",
]


@pytest.fixture(scope="module")
def profile():
    """A compute-only profile of this machine for tiny-llama (collectives fall back to the link model)."""
    return run_profile(ProfileConfig(model="tiny-llama", device="cpu", nprocs=(), repeats=1, progress=False))


def test_spearman_regret_and_ranks() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_average(np.array([3.0, 1.0, 3.0])).tolist() == [2.5, 1.0, 2.5]
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(spearman([1.0], [2.0]))
    # planner picks the plan it predicts fastest (index 1); the fastest measured is index 2
    assert regret(np.array([2.0, 1.5, 1.0]), np.array([0.3, 0.1, 0.2])) == pytest.approx(1.5)


def test_select_plans_keeps_the_planners_best_and_spreads_the_rest(profile) -> None:
    model, cluster = load_model("tiny-llama"), local_cluster(4)
    training = TrainingSpec(global_batch_size=8, seq_len=64, dtype="fp32")
    calib = profile.model_copy(update={"constants": host_constants(profile, procs=4, cores=2)})
    picked = select_plans(model, cluster, training, calibration=calib, max_plans=7, top_plans=2)
    best = search(model, cluster, training, top_k=1, calibration=calib, cp=1).best
    assert len(picked) == 7 and picked[0][1] == best.plan
    ranks = [r for r, _ in picked]
    assert ranks == sorted(ranks) and ranks[:2] == [1, 2] and ranks[-1] > 50
    assert len({p.short() + str(p.layers_per_stage) for _, p in picked}) == 7
    assert all(p.world_size == 4 and p.cp == 1 for _, p in picked)


def test_host_constants_share_the_cores() -> None:
    cpu = CalibrationProfile(device="cpu", gpu="cpu", torch_version="x", threads=2)
    assert host_constants(cpu, procs=4, cores=2)["measured_rate_scale"] == pytest.approx(0.25)
    assert host_constants(cpu, procs=1, cores=2)["measured_rate_scale"] == pytest.approx(1.0)
    gpu = CalibrationProfile(device="NVIDIA H200", gpu="h200", torch_version="x", threads=16)
    assert host_constants(gpu, procs=8) == {"framework_bytes": 0.0}


def test_cpu_host_constants_reproduce_the_measured_block_host_times() -> None:
    """On a CPU host the measured eager host time adds to compute (q = 1), and the cost model's host
    time per block (block_host_s over its own op count) equals the profile's measured block times,
    slowed by the core share; DP reduction is not hidden and the executor's scalar all-reduces are
    charged per step."""
    host = HostPoint(tokens=8, threads=1, block_s=3e-3, block_full_recompute_s=5e-3, block_selective_recompute_s=12e-3,
                     block_tp_s=18e-3, block_tp_sp_s=27e-3, tp_group_size=2, aten_ops_per_block=225,
                     concurrency_tokens=128, block_cpu_s=10e-3, concurrent_block_cpu_s={2: 9e-3, 4: 12.5e-3})
    coll = (CollectivePoint(op="all_reduce", group_size=4, nbytes=1024, time_s=2e-3),
            CollectivePoint(op="all_reduce", group_size=4, nbytes=4096, time_s=3e-3))
    cpu = CalibrationProfile(device="cpu", gpu="cpu", torch_version="x", threads=1, host=host, collectives=coll)
    c = host_constants(cpu, procs=4, cores=2)
    assert c["host_overlap_exponent"] == 1.0 and c["overlap_grad_reduce"] == 0.0 and c["framework_bytes"] == 0.0
    assert c["step_overhead_s"] == pytest.approx(3 * 2e-3)
    eff = efficiency_with_constants(DEFAULT_EFFICIENCY, CalibrationProfile(device="cpu", torch_version="x", constants=c))
    share = 0.5 / 1.25  # 4 one-thread workers on 2 cores, each block costing 1.25x the CPU it costs alone
    assert c["measured_rate_scale"] == pytest.approx(share)
    # 2 workers on 2 cores measured no dearer than alone: the plain core share (inflation is at least 1)
    assert host_constants(cpu, procs=2, cores=2)["measured_rate_scale"] == pytest.approx(1.0)
    assert host_constants(cpu, procs=3, cores=2)["measured_rate_scale"] == pytest.approx(2 / 3)  # not measured

    def block(tp, sp, rc):
        ops = block_host_ops(eff, cross=False, flash=True, tp=tp, sp=sp)
        return block_host_s(eff, ops, tp=tp, sp=sp, recompute=rc) * share

    assert block(1, 0, 0) == pytest.approx(3e-3)
    assert block(1, 0, 2) == pytest.approx(5e-3) and block(1, 0, 1) == pytest.approx(12e-3)
    assert block(2, 0, 0) == pytest.approx(18e-3) and block(2, 1, 0) == pytest.approx(27e-3)
    # arrays of plans (the planner's batch path) price the same
    tp, sp = np.array([1, 2, 2]), np.array([0, 0, 1])
    ops = block_host_ops(eff, cross=False, flash=True, tp=tp, sp=sp)
    assert np.allclose(block_host_s(eff, ops, tp=tp, sp=sp, recompute=np.zeros(3)) * share, [3e-3, 18e-3, 27e-3])


def test_default_host_factors_keep_gpu_predictions() -> None:
    """With the default (GPU) constants the host term is the documented ops * host_op_s * (3 + full)."""
    eff = DEFAULT_EFFICIENCY
    for tp, sp, rc, cross in ((1, 0, 0, False), (8, 1, 2, False), (4, 0, 1, True), (2, 1, 2, True)):
        ops = block_host_ops(eff, cross=cross, flash=True, tp=tp, sp=sp)
        expected = ops * eff.host_op_s * (3 + (rc == 2))
        assert block_host_s(eff, ops, tp=tp, sp=sp, recompute=rc) == pytest.approx(expected)


def test_failed_runs_are_rows_not_crashes(tmp_path, profile) -> None:
    def runner(plan, **kwargs):
        raise RuntimeError(f"rank 1 died running {plan.short()}")

    cfg = LocalValidation(model=load_model("tiny-llama"), procs=2, max_plans=2, steps=2)
    report = run_local_validation(
        cfg, runner=runner, cluster=local_cluster(2), profile=profile, out_dir=tmp_path
    )
    assert report.summary["plans_run"] == 0 and report.summary["plans_failed"] == 2
    rows = pd.read_csv(tmp_path / "validation.csv")
    assert rows["status"].str.startswith("failed: rank 1 died").all()
    assert rows["measured_step_time_s"].isna().all()


def test_doc_part_is_replaced_and_other_sections_kept(tmp_path) -> None:
    doc = tmp_path / "VALIDATION.md"
    doc.write_text("# Validation\n\nothers' section\n<!-- published:begin -->\nX\n<!-- published:end -->\n")
    update_part(doc, "local", "first")
    update_part(doc, "calibrate-vtrain", "fit")
    update_part(doc, "local", "second")
    text = doc.read_text()
    assert "<!-- published:begin -->\nX\n<!-- published:end -->" in text and "others' section" in text
    assert "second" in text and "first" not in text and "fit" in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.xdist_group("dist")
def test_reduced_local_validation_really_runs_every_plan(tmp_path, profile) -> None:
    prof = tmp_path / "profile.json"
    save_profile(profile, prof)
    out = tmp_path / "val"
    doc = tmp_path / "VALIDATION.md"
    rc = main(
        [
            "validate",
            "--local",
            "--model",
            "tiny-llama",
            "--seq-len",
            "64",
            "--procs",
            "2",
            "--max-plans",
            "3",
            "--steps",
            "2",
            "--out",
            str(out),
            "--profile",
            str(prof),
            "--doc",
            str(doc),
        ]
    )
    assert rc == 0
    rows = pd.read_csv(out / "validation.csv")
    assert list(rows.columns[:2]) == ["plan", "measured_step_time_s"] and set(REQUIRED) <= set(rows.columns)
    assert len(rows) == 3 and (rows["status"] == "ok").all()
    assert rows[REQUIRED[1:]].notna().all().all() and (rows[REQUIRED[1:]] > 0).all().all()
    assert rows["planner_top1"].sum() == 1
    for r in rows.itertuples():
        measured = StepMeasurement.model_validate_json(
            (out / "runs" / r.run_dir.split("/runs/")[-1] / "summary.json").read_text()
        )
        # the measured figures are the executor's, not copies of the prediction
        assert measured.step_time_s == pytest.approx(r.measured_step_time_s)
        assert measured.peak_bytes == pytest.approx(r.measured_peak_bytes)
        assert measured.world_size == 2 and measured.plan.short() in r.plan
        assert r.measured_step_time_s != pytest.approx(r.predicted_step_time_s, rel=1e-6)
        # the executor's own counts: live tensor bytes (memory.json), CPU seconds and load per step
        memory = json.loads((out / "runs" / r.run_dir.split("/runs/")[-1] / "memory.json").read_text())
        assert r.measured_tensor_peak_bytes == pytest.approx(memory["tensor_peak_bytes"])
        assert 0 < r.measured_tensor_peak_bytes < r.measured_peak_bytes * 4
        assert r.measured_cpu_s > 0 and r.load_avg_max >= r.load_avg_min >= 0
    summary = json.loads((out / "summary.json").read_text())["summary"]
    for key in (
        "step_time_mean_abs_error",
        "step_time_max_abs_error",
        "spearman",
        "regret",
        "peak_mean_abs_error",
        "tensor_peak_mean_abs_error",
        "load_avg_max",
    ):
        assert key in summary
    assert summary["plans_run"] == 3 and summary["regret"] >= 1.0
    assert "validate --local" in doc.read_text() and (tmp_path / "validation_local.csv").is_file()


def test_cli_validate_bad_input_is_a_one_line_error(capsys) -> None:
    assert main(["validate", "--local", "--model", "tiny-llama", "--seq-len", "4096"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seq_len=4096" in err
    assert main(["validate", "--local", "--steps", "1"]) == 2
    assert "steps=1" in capsys.readouterr().err


def test_work_span_bound_on_an_oversubscribed_host() -> None:
    """4 one-thread workers on 2 cores: without bubbles the step is the CPU work of all workers shared
    by the cores; with a long bubble the idle workers leave their cores to the busy ones, and the free
    critical path is the bound."""
    from types import SimpleNamespace

    from planner.closed_loop_host import work_span_step_s

    def est(compute, bubble, comm):
        t = SimpleNamespace(tp_comm_s=0.0, cp_comm_s=0.0, dp_comm_s=comm, pp_comm_s=0.0, bubble_s=bubble)
        return SimpleNamespace(step_time_s=compute + bubble + comm, time=t)

    # no bubble: 4 workers' CPU (compute + what the collective costs in CPU) on 2 cores
    assert work_span_step_s(est(0.3, 0.0, 0.05), procs=4, cores=2, comm_cpu_s=0.01) == pytest.approx(2 * 0.31)
    assert work_span_step_s(est(0.3, 0.0, 0.05), procs=4, cores=2) == pytest.approx(2 * 0.35)  # CPU = wall
    # long bubble: the free critical path
    assert work_span_step_s(est(0.3, 0.5, 0.05), procs=4, cores=2, comm_cpu_s=0.01) == pytest.approx(0.85)
    assert work_span_step_s(est(0.3, 0.0, 0.05), procs=2, cores=2, comm_cpu_s=0.01) == pytest.approx(0.35)
    # per-step synchronisation: waiting (wall) on the span, its CPU in the work
    assert work_span_step_s(est(0.3, 0.0, 0.05), procs=4, cores=2, comm_cpu_s=0.01, sync_s=0.03,
                            sync_cpu_s=0.003) == pytest.approx(2 * (0.3 - 0.03 + 0.013))


def test_sharded_data_parallel_cpu_follows_the_executors_wrapper() -> None:
    from planner.closed_loop_host import sharded_dp_cpu_s

    host = HostPoint(tokens=8, threads=1, block_s=3e-3, fsdp_procs=4, fsdp_zero2_block_s=0.01, fsdp_zero3_block_s=0.02)
    assert sharded_dp_cpu_s(ParallelPlan(dp=4, tp=1, pp=1, micro_batch_size=1), host, num_layers=8) == 0.0  # DDP
    assert sharded_dp_cpu_s(ParallelPlan(dp=4, tp=1, pp=1, micro_batch_size=1, zero_stage=1), host, num_layers=8) == 0.0
    assert sharded_dp_cpu_s(ParallelPlan(dp=4, tp=1, pp=1, micro_batch_size=1, zero_stage=2), host,
                            num_layers=8) == pytest.approx(9 * 0.01)
    assert sharded_dp_cpu_s(ParallelPlan(dp=2, tp=1, pp=2, micro_batch_size=1, zero_stage=3), host,
                            num_layers=8) == pytest.approx(5 * 0.02)
    assert sharded_dp_cpu_s(ParallelPlan(dp=2, tp=2, pp=1, micro_batch_size=1), host, num_layers=8) == pytest.approx(0.09)
    assert sharded_dp_cpu_s(ParallelPlan(dp=1, tp=2, pp=2, micro_batch_size=1), host, num_layers=8) == 0.0
    assert sharded_dp_cpu_s(ParallelPlan(dp=2, tp=1, pp=2, micro_batch_size=1, zero_stage=2), None, num_layers=8) == 0.0


def test_ddp_cpu_and_the_comm_models_share_are_not_counted_twice() -> None:
    from planner.closed_loop_host import sharded_dp_cpu_s

    host = HostPoint(tokens=8, threads=1, block_s=3e-3, fsdp_procs=4, ddp_block_s=0.005, fsdp_zero2_block_s=0.01)
    ddp = ParallelPlan(dp=4, tp=1, pp=1, micro_batch_size=1)
    assert sharded_dp_cpu_s(ddp, host, num_layers=8) == pytest.approx(9 * 0.005)
    # the all-reduce's CPU that the comm model already prices comes off; never below 0
    assert sharded_dp_cpu_s(ddp, host, num_layers=8, dp_comm_cpu_s=0.02) == pytest.approx(9 * 0.005 - 0.02)
    assert sharded_dp_cpu_s(ddp, host, num_layers=8, dp_comm_cpu_s=1.0) == 0.0


def test_tp_cpu_that_grows_with_tokens() -> None:
    from planner.closed_loop_host import tp_token_cpu_s

    host = HostPoint(tokens=8, threads=1, block_s=3e-3, tp_token_s=2e-5, tp_sp_token_s=3e-5)
    plan = ParallelPlan(dp=1, tp=2, pp=2, micro_batch_size=4)  # 2 micro-batches of 4 x 128 tokens, 4 blocks
    assert tp_token_cpu_s(plan, host, num_layers=8, global_batch=8, seq_len=128) == pytest.approx(2e-5 * 512 * 2 * 4)
    sp = ParallelPlan(dp=1, tp=2, pp=2, micro_batch_size=4, sequence_parallel=True)
    assert tp_token_cpu_s(sp, host, num_layers=8, global_batch=8, seq_len=128) == pytest.approx(3e-5 * 512 * 2 * 4)
    assert tp_token_cpu_s(ParallelPlan(dp=4, tp=1, pp=1, micro_batch_size=1), host, num_layers=8, global_batch=8,
                          seq_len=128) == 0.0
