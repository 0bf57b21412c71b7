"""`paraplan validate --local`: plan selection, scores, the report section, and a real reduced sweep."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from costmodel import ParallelPlan, TrainingSpec, load_model
from costmodel.calibration.constants import efficiency_with_constants
from costmodel.calibration.fit_data import local_cluster
from costmodel.calibration.profile import ProfileConfig, run_profile
from costmodel.calibration.profile_spec import CalibrationProfile, CollectivePoint, HostPoint, save_profile
from costmodel.layer.compute import DEFAULT_EFFICIENCY, block_host_ops, block_host_s
from costmodel.specs import StepMeasurement
from costmodel.step.runnable import executor_unsupported
from planner import search
from planner.cli import main
from planner.closed_loop.doc import BEGIN, END, update_part
from planner.closed_loop.metrics import rank_average, regret, spearman
from planner.closed_loop.validate import LocalValidation, host_constants, run_local_validation, select_plans

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
    """The planner's best, the best plan of each context-parallel degree (cp2, cp4), a spread of the
    rest; only plans the executor runs on this device (the rules of costmodel.step.runnable)."""
    model, cluster = load_model("tiny-llama"), local_cluster(4)
    training = TrainingSpec(global_batch_size=8, seq_len=64, dtype="fp32")
    calib = profile.model_copy(update={"constants": host_constants(profile, procs=4, cores=2)})
    picked = select_plans(model, cluster, training, calibration=calib, max_plans=7, top_plans=2)
    best = search(model, cluster, training, top_k=1, calibration=calib, runnable_only=True).best
    assert len(picked) == 7 and picked[0][1] == best.plan
    ranks = [r for r, _ in picked]
    assert ranks == sorted(ranks) and ranks[:2] == [1, 2] and ranks[-1] > 50
    assert len({p.short() + str(p.layers_per_stage) for _, p in picked}) == 7
    assert all(p.world_size == 4 for _, p in picked) and {2, 4} <= {p.cp for _, p in picked}
    assert all(executor_unsupported(p, device="cpu", model=model, seq_len=64, global_batch=8) is None
               for _, p in picked)


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
    # TP + recompute: the recomputed ops pay DTensor dispatch too (factors multiply)
    assert block(2, 0, 2) == pytest.approx(18e-3 * 5 / 3) and block(2, 0, 1) == pytest.approx(18e-3 * 4)
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

    from planner.closed_loop.host import work_span_step_s

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


def _estimate_with(plan: ParallelPlan, **constants: float):
    """tiny-llama on 4 CPU processes, priced with only `constants` on top of the defaults (q = 1)."""
    from costmodel import estimate

    calib = CalibrationProfile(device="cpu", gpu="cpu", torch_version="x", threads=1,
                               constants={"host_overlap_exponent": 1.0, **constants})
    training = TrainingSpec(global_batch_size=8, seq_len=64, dtype="fp32")
    return estimate(load_model("tiny-llama"), local_cluster(4), training, plan, calibration=calib)


def test_data_parallel_wrapper_host_cost_follows_the_executors_wrapper() -> None:
    """The DP wrapper's measured host cost per block (+1 unit for the embedding / head) is the floor of
    the exposed DP time: DDP for ZeRO-0/1 on plain models, FSDP2 otherwise, resharding for ZeRO-3."""
    big = {"host_ddp_block_s": 1.0, "host_fsdp_block_s": 2.0, "host_fsdp_reshard_block_s": 3.0}
    layers = load_model("tiny-llama").num_layers
    cases = [(ParallelPlan(dp=4), 1.0 * (layers + 1)), (ParallelPlan(dp=4, zero_stage=1), 1.0 * (layers + 1)),
             (ParallelPlan(dp=4, zero_stage=2), 2.0 * (layers + 1)),
             (ParallelPlan(dp=2, pp=2, zero_stage=3), 3.0 * (layers // 2 + 1)),
             (ParallelPlan(dp=2, tp=2), 2.0 * (layers + 1)),  # replicate (FSDP-based) with TP
             (ParallelPlan(tp=2, pp=2), 0.0)]
    for plan, want in cases:
        got = _estimate_with(plan, **big).time.dp_comm_s
        assert got == pytest.approx(want, rel=1e-9), plan.short()
    base = _estimate_with(ParallelPlan(dp=4, zero_stage=2)).time.dp_comm_s
    assert 0 < base < 1.0  # without the measured terms only the collectives count


def test_tp_host_cost_that_grows_with_tokens() -> None:
    """A TP block's per-token host cost adds to compute (q = 1): tokens per micro-batch x micro-batches x
    blocks on the rank; SP has its own figure; nothing without TP."""
    layers = load_model("tiny-llama").num_layers
    plan = ParallelPlan(tp=2, pp=2, micro_batch_size=4)  # 2 micro-batches of 4 x 64 tokens
    grow = _estimate_with(plan, host_tp_token_s=1e-3).time.compute_s - _estimate_with(plan).time.compute_s
    assert grow == pytest.approx(1e-3 * 256 * 2 * (layers // 2), rel=1e-6)
    sp = plan.model_copy(update={"sequence_parallel": True})
    assert _estimate_with(sp, host_tp_token_s=1e-3).time.compute_s == pytest.approx(_estimate_with(sp).time.compute_s)
    grow_sp = _estimate_with(sp, host_sp_token_s=1e-3).time.compute_s - _estimate_with(sp).time.compute_s
    assert grow_sp == pytest.approx(grow, rel=1e-6)
    dp = ParallelPlan(dp=4)
    assert _estimate_with(dp, host_tp_token_s=1e-3).time.compute_s == pytest.approx(_estimate_with(dp).time.compute_s)


def test_optimizer_host_cost_per_tensor_and_parameter() -> None:
    """The optimizer step: measured seconds per parameter on the rank's shard, plus a per-tensor host cost
    that depends on what the tensors are (plain, TP or FSDP2 DTensors)."""
    from costmodel.layer.params import end_tensors, layer_tensors, model_shape, total_params

    model = load_model("tiny-llama")
    shape, layers, params = model_shape(model), model.num_layers, total_params(model)
    tensors = layers * layer_tensors(shape) + sum(end_tensors(shape))
    per = {"host_optimizer_tensor_s": 1e-3, "host_optimizer_tp_tensor_s": 5e-3,
           "host_optimizer_sharded_tensor_s": 2e-3, "optimizer_param_s": 1e-8}
    plain = _estimate_with(ParallelPlan(dp=4), **per).time.optimizer_s
    assert plain == pytest.approx(tensors * 1e-3 + params * 1e-8, rel=1e-9)
    sharded = _estimate_with(ParallelPlan(dp=4, zero_stage=2), **per).time.optimizer_s
    assert sharded == pytest.approx(tensors * 2e-3 + params / 4 * 1e-8, rel=1e-9)
    zero1 = _estimate_with(ParallelPlan(dp=4, zero_stage=1), **per).time.optimizer_s  # ZeroRedundancyOptimizer
    assert zero1 == pytest.approx(tensors / 4 * 1e-3 + params / 4 * 1e-8, rel=1e-9)
    tp = _estimate_with(ParallelPlan(dp=2, tp=2), **per).time.optimizer_s
    assert tensors * 5e-3 < tp < tensors * 5e-3 + params * 1e-8  # replicated norms: a bit over half


def test_with_host_terms_applies_the_measured_constants_under_the_profiles_own() -> None:
    from costmodel.calibration.host_terms import with_host_terms

    host = HostPoint(tokens=8, threads=1, block_s=3e-3, ddp_block_s=0.004, fsdp_procs=4, fsdp_zero2_block_s=0.01,
                     optimizer_tensor_s=1e-5, optimizer_param_s=2e-9, tp_token_s=3e-5)
    cpu = CalibrationProfile(device="cpu", gpu="cpu", torch_version="x", threads=1, host=host,
                             constants={"host_op_s": 1e-4})
    got = with_host_terms(cpu, procs=4, cores=2).constants
    assert got["host_op_s"] == 1e-4  # the profile's own (fitted) constant wins
    assert got["host_fsdp_block_s"] == pytest.approx(0.01 / 0.5) and got["host_ddp_block_s"] == pytest.approx(0.008)
    assert got["optimizer_param_s"] == pytest.approx(4e-9) and got["host_tp_token_s"] == pytest.approx(6e-5)
    gpu = CalibrationProfile(device="NVIDIA H200", gpu="h200", torch_version="x", threads=16)
    assert with_host_terms(gpu, procs=8) is gpu and with_host_terms(None, procs=8) is None


def test_speed_ratio_puts_predictions_at_the_machines_current_speed() -> None:
    """The speed probe times the profile's reference block again; the summary scores the prediction x
    the ratio separately from the a-priori one."""
    from costmodel.calibration.profile.host import speed_probe_s
    from planner.closed_loop.metrics import summarize_validation

    assert 0 < speed_probe_s(load_model("tiny-llama"), tokens=16, layers=1, repeats=2) < 1.0
    rows = pd.DataFrame({"plan": ["a", "b"], "measured_step_time_s": [1.0, 2.0], "predicted_step_time_s": [0.8, 1.6],
                         "measured_peak_bytes": [1.0, 1.0], "predicted_peak_bytes": [1.0, 1.0],
                         "speed_ratio": [1.25, 1.25]})
    rows["speed_predicted_step_time_s"] = rows["predicted_step_time_s"] * rows["speed_ratio"]
    s = summarize_validation(rows)
    assert s["step_time_mean_abs_error"] == pytest.approx(0.2)
    assert s["speed_step_time_mean_abs_error"] == pytest.approx(0.0) and s["speed_ratio_max"] == 1.25
