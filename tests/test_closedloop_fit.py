"""Fitting the cost model's constants (costmodel.calibration.fit, costmodel.calibration.calibrate) and the constants plumbing."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from costmodel import ParallelPlan, TrainingSpec, estimate, get_cluster, load_model
from costmodel.calibration.calibrate import calibrate, efficiency_overrides
from costmodel.calibration.constants import MEASURED_RATE_SCALE, efficiency_with_constants
from costmodel.calibration.fit import (
    Observation,
    cross_validated,
    error_stats,
    fit_constants,
    holdout_split,
    minimize_unit_box,
    predict_step_times,
)
from costmodel.calibration.fit_data import observations_from_summaries
from costmodel.calibration.profile_spec import CalibrationProfile, GemmPoint, load_profile
from costmodel.layer.compute import DEFAULT_EFFICIENCY
from costmodel.specs import StepMeasurement
from planner.cli import main

TRUE = {"gemm_max_efficiency": 0.55, "host_op_s": 4e-5, "collective_efficiency": 0.6}


def _cases() -> list[tuple]:
    """A small grid of GPT plans on 1-2 DGX-A100 nodes (varied degrees, micro-batches, recompute)."""
    model = load_model("gpt3-1.3b")
    out = []
    for nodes, dp, tp, pp, mb, rc in [
        (1, 8, 1, 1, 1, "none"),
        (1, 4, 2, 1, 2, "selective"),
        (1, 2, 2, 2, 1, "full"),
        (1, 1, 8, 1, 4, "none"),
        (1, 2, 4, 1, 1, "full"),
        (2, 16, 1, 1, 2, "none"),
        (2, 4, 4, 1, 1, "selective"),
        (2, 2, 2, 4, 1, "full"),
        (1, 1, 4, 2, 2, "none"),
        (2, 8, 2, 1, 4, "full"),
        (1, 4, 1, 2, 2, "selective"),
        (2, 4, 2, 2, 2, "none"),
    ]:
        cluster = get_cluster("dgx-a100", nodes=nodes)
        training = TrainingSpec(global_batch_size=64, seq_len=2048, dtype="bf16")
        out.append(
            (model, cluster, training, ParallelPlan(dp=dp, tp=tp, pp=pp, micro_batch_size=mb, recompute=rc))
        )
    return out


def _synthetic(constants: dict[str, float]) -> list[Observation]:
    """Observations whose 'measured' time is the cost model's own prediction with `constants`."""
    eff = replace(DEFAULT_EFFICIENCY, **constants)
    obs = []
    for i, (m, c, t, p) in enumerate(_cases()):
        step = estimate(m, c, t, p, efficiency=eff).step_time_s
        obs.append(Observation(label=f"case{i}", model=m, cluster=c, training=t, plan=p, step_time_s=step))
    return obs


def test_minimizer_finds_the_minimum_of_a_bowl_inside_the_box() -> None:
    target = np.array([0.3, 0.7, 0.55])
    res = minimize_unit_box(lambda x: float(((x - target) ** 2).sum()), np.full(3, 0.5), max_evals=400, tol=1e-12)
    assert np.allclose(res.x, target, atol=1e-3)
    edge = minimize_unit_box(lambda x: float(x[0]), np.array([0.5]), max_evals=200)
    assert edge.x[0] == pytest.approx(0.0, abs=1e-6)  # clipped to the box, not beyond


def test_holdout_split_is_a_seeded_partition() -> None:
    fit, test = holdout_split(20, test_fraction=0.3, seed=3)
    assert len(test) == 6 and sorted(np.concatenate([fit, test]).tolist()) == list(range(20))
    assert np.array_equal(test, holdout_split(20, test_fraction=0.3, seed=3)[1])
    assert not np.array_equal(test, holdout_split(20, test_fraction=0.3, seed=4)[1])
    with pytest.raises(ValueError, match="test_fraction"):
        holdout_split(5, test_fraction=1.0)


def test_constants_in_a_profile_equal_the_same_efficiency_model() -> None:
    m, c, t, p = _cases()[2]
    profile = CalibrationProfile(device="a100", torch_version="x", constants=TRUE)
    via_profile = estimate(m, c, t, p, calibration=profile)
    via_eff = estimate(m, c, t, p, efficiency=replace(DEFAULT_EFFICIENCY, **TRUE))
    assert via_profile.step_time_s == pytest.approx(via_eff.step_time_s, rel=1e-12)
    assert via_profile.step_time_s != pytest.approx(estimate(m, c, t, p).step_time_s, rel=1e-3)
    assert efficiency_with_constants(DEFAULT_EFFICIENCY, None) is DEFAULT_EFFICIENCY
    with pytest.raises(ValueError, match="constants.gemm_eff"):
        CalibrationProfile(device="a100", torch_version="x", constants={"gemm_eff": 0.5})


def test_measured_rate_scale_scales_measured_gemm_rates() -> None:
    gemm = (GemmPoint(m=512, n=512, k=512, dtype="fp32", time_s=1e-3, flops_per_s=2 * 512**3 / 1e-3),)
    base = CalibrationProfile(
        device="cpu", gpu="cpu", torch_version="x", gemm=gemm, constants={"host_op_s": 0.0}
    )
    half = base.model_copy(update={"constants": {MEASURED_RATE_SCALE: 0.5, "host_op_s": 0.0}})
    assert half.gemm_flops_per_s(512, 512, 512, "fp32") == pytest.approx(
        0.5 * base.gemm_flops_per_s(512, 512, 512, "fp32")
    )
    model, cluster = load_model("tiny-llama"), get_cluster("cpu")
    training = TrainingSpec(global_batch_size=8, seq_len=64, dtype="fp32")
    plan = ParallelPlan(dp=4)
    slow = estimate(model, cluster, training, plan, calibration=half).time.compute_s
    fast = estimate(model, cluster, training, plan, calibration=base).time.compute_s
    assert slow > 1.15 * fast  # the GEMM share doubles; element-wise work does not change


def test_fit_recovers_known_constants_on_held_out_plans() -> None:
    obs = _synthetic(TRUE)
    before = error_stats(predict_step_times(obs), np.array([o.step_time_s for o in obs]))
    assert before.mean_abs > 0.10  # the defaults are far from the truth
    res = fit_constants(obs, names=tuple(TRUE), test_fraction=0.25, seed=0, max_evals=300)
    assert res.after_test.n == 3 and res.after_fit.n == 9
    assert res.after_fit.mean_abs < 0.01
    assert res.after_test.mean_abs < 0.02
    assert res.before_test.mean_abs > 5 * res.after_test.mean_abs


def test_calibrate_saves_a_profile_that_reproduces_the_fit(tmp_path) -> None:
    obs = _synthetic({"host_op_s": 6e-5, "overlap_grad_reduce": False})
    start = replace(DEFAULT_EFFICIENCY, overlap_grad_reduce=False)
    fit, profile = calibrate(obs, names=("host_op_s",), efficiency=start, test_fraction=0.25, max_evals=60)
    assert profile.constants["overlap_grad_reduce"] == 0.0  # the start differs from the defaults: stored
    assert efficiency_overrides(start) == {"overlap_grad_reduce": 0.0}
    path = tmp_path / "calib.json"
    path.write_text(profile.model_dump_json())
    loaded = load_profile(path)
    again = [estimate(o.model, o.cluster, o.training, o.plan, calibration=loaded).step_time_s for o in obs]
    assert np.allclose(again, fit.rows["predicted_after_s"], rtol=1e-9)
    assert fit.after_test.mean_abs < 0.02


def _summary_files(tmp_path, constants: dict[str, float]) -> list[str]:
    """summary.json files of CPU runs whose step times follow the cost model with `constants`."""
    model, training = load_model("tiny-llama"), TrainingSpec(global_batch_size=8, seq_len=64, dtype="fp32")
    paths = []
    for i, plan in enumerate(
        [
            ParallelPlan(dp=4),
            ParallelPlan(dp=2, tp=2),
            ParallelPlan(dp=2, pp=2),
            ParallelPlan(tp=2, pp=2),
            ParallelPlan(dp=4, micro_batch_size=2),
            ParallelPlan(dp=2, pp=2, micro_batch_size=2, zero_stage=1),
        ]
    ):
        cluster = get_cluster("cpu")
        est = estimate(model, cluster, training, plan, efficiency=replace(DEFAULT_EFFICIENCY, **constants))
        m = StepMeasurement(
            plan=plan,
            model="tiny-llama",
            device="cpu",
            backend="gloo",
            world_size=4,
            steps=3,
            global_batch_size=8,
            seq_len=64,
            step_time_s=est.step_time_s,
            tokens_per_s=512 / est.step_time_s,
            peak_bytes=est.memory.peak_bytes,
        )
        path = tmp_path / f"run{i}" / "summary.json"
        path.parent.mkdir()
        path.write_text(m.model_dump_json())
        paths.append(str(path))
    return paths


def test_cli_calibrate_fits_summary_files(tmp_path, capsys) -> None:
    paths = _summary_files(tmp_path, {"host_op_s": 3e-4, "step_overhead_s": 0.02})
    assert len(observations_from_summaries(paths)) == 6
    out = tmp_path / "calib.json"
    rc = main(
        [
            "calibrate",
            *paths,
            "--fit",
            "host_op_s,step_overhead_s",
            "--holdout",
            "0.34",
            "--max-evals",
            "120",
            "--out",
            str(out),
            "--csv",
            str(tmp_path / "fit.csv"),
        ]
    )
    assert rc == 0
    profile = load_profile(out)
    assert set(profile.constants) == {"host_op_s", "step_overhead_s"}
    assert profile.fit["after_test"]["mean_abs_error"] < 0.03
    assert "held-out part: after" in capsys.readouterr().out
    assert (tmp_path / "fit.csv").read_text().count("\n") == 7


def test_cli_calibrate_bad_input_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["calibrate"]) == 2
    assert "give summary.json files or --vtrain" in capsys.readouterr().err
    bad = tmp_path / "summary.json"
    bad.write_text(json.dumps({"plan": {}}))
    assert main(["calibrate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a StepMeasurement" in err
    assert main(["calibrate", str(tmp_path / "missing.json")]) == 2
    assert main(["calibrate", "--vtrain", "--data", str(tmp_path / "nope")]) == 2
    assert "--data" in capsys.readouterr().err
    paths = _summary_files(tmp_path, {})
    assert main(["calibrate", *paths, "--fit", "warp_factor"]) == 2
    assert "warp_factor" in capsys.readouterr().err


def test_cross_validated_predicts_each_run_from_the_others() -> None:
    obs = _synthetic({"host_op_s": 5e-5, "step_overhead_s": 0.05})[:6]
    measured = np.array([o.step_time_s for o in obs])
    oof = cross_validated(obs, names=("host_op_s", "step_overhead_s"), max_evals=80)
    assert np.isfinite(oof).all()
    assert error_stats(oof, measured).mean_abs < 0.03
    assert error_stats(predict_step_times(obs), measured).mean_abs > 0.05
    with pytest.raises(ValueError, match="at least 2"):
        cross_validated(obs[:1])
