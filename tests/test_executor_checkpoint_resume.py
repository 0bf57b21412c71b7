"""Resume across processes: a dp2 run checkpointed at step 5 and resumed (on dp2, and resharded onto tp2, pp2, cp2)
gives the losses of the uninterrupted run for steps 6-10; the run's metrics/summary follow the contract."""

from __future__ import annotations

import json

import pytest
from _executor_reference import reference_losses

from costmodel import ParallelPlan, StepMeasurement, save_plan
from executor.launch import run_plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("dist")]
RUN = {"model": "tiny-llama", "steps": 10, "global_batch": 4, "seq_len": 32, "log_every": 0, "timeout_s": 300}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp2")
    result = run_plan(save_plan(ParallelPlan(dp=2), out / "in.json"), out=out / "run", ckpt_every=5,
                      stream=None, **RUN)
    return result


def test_metrics_and_summary_follow_the_contract(uninterrupted):
    records = [json.loads(line) for line in (uninterrupted.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 11))
    for r in records:
        assert r["loss"] > 0 and r["step_time_s"] > 0 and r["peak_bytes"] > 0
        assert r["tokens_per_s"] == pytest.approx(4 * 32 / r["step_time_s"])
        assert r["tflops_per_gpu"] > 0 and 0 < r["mfu"] < 1
    summary = StepMeasurement.model_validate_json((uninterrupted.out_dir / "summary.json").read_text())
    assert summary == uninterrupted.summary
    assert (summary.world_size, summary.steps, summary.backend, summary.device) == (2, 10, "gloo", "cpu")
    assert summary.plan == ParallelPlan(dp=2) and summary.model == "tiny-llama"
    assert summary.tokens_per_s == pytest.approx(4 * 32 / summary.step_time_s)
    assert summary.peak_bytes >= max(r["peak_bytes"] for r in records)
    assert records[-1]["loss"] < records[0]["loss"]  # it learns
    engine = json.loads((uninterrupted.out_dir / "engine.json").read_text())  # what the engine applied
    assert engine == {"dtype": "fp32", "compile": False, "float8": False, "async_tp": False, "optimizer": "foreach"}


def test_losses_match_the_single_process_run(uninterrupted):
    assert uninterrupted.losses == pytest.approx(reference_losses("tiny-llama", steps=10, global_batch=4,
                                                                  seq_len=32), rel=1e-5)


@pytest.mark.parametrize("knobs", [
    {"dp": 2},
    {"tp": 2},
    {"pp": 2, "virtual_stages": 2, "schedule": "interleaved-1f1b"},  # two model chunks per rank
    {"dp": 2, "zero_stage": 3},  # FSDP2: parameters and Adam states sharded
    {"dp": 2, "zero_stage": 1},  # ZeroRedundancyOptimizer: each rank loads the states it owns
    {"cp": 2},  # context parallel: the same weights, each rank half of every sequence
], ids=["dp2-to-dp2", "dp2-to-tp2", "dp2-to-pp2-interleaved", "dp2-to-fsdp2", "dp2-to-zero1", "dp2-to-cp2"])
def test_resume_from_step_5_reproduces_steps_6_to_10(uninterrupted, tmp_path, knobs):
    ckpt = uninterrupted.out_dir / "checkpoints" / "step-00000005"
    assert ckpt.is_dir()
    result = run_plan(save_plan(ParallelPlan(**knobs), tmp_path / "in.json"), out=tmp_path / "run",
                      resume=ckpt, stream=None, **RUN)
    assert [r["step"] for r in result.metrics] == list(range(6, 11))
    expected = uninterrupted.losses[5:]
    if knobs == {"dp": 2}:
        assert result.losses == pytest.approx(expected, rel=1e-9, abs=0)  # same plan: the same arithmetic
    else:
        assert result.losses == pytest.approx(expected, rel=1e-5)  # resharded: parity tolerance (fp32)
    assert result.summary.plan == ParallelPlan(**knobs)
    assert result.summary is not None and result.summary.steps == 5
