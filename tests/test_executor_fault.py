"""Failure handling: a rank that dies or raises stops the whole job, within bounded time, with the rank and
the cause in the error; with max_restarts torchrun restarts the workers and they resume from the last
complete checkpoint (even when the failure struck while a checkpoint was being written).

Faults are injected with PARAPLAN_FAULT (executor.train): the rank really raises, or really SIGKILLs itself.
The collective timeout is set far above the pytest timeout, so a test only passes if torchrun notices the
failure and stops the job, not because a collective timed out."""

from __future__ import annotations

import json
import time

import pytest
from _executor_reference import reference_losses

from costmodel import ParallelPlan, save_plan
from executor.launch import RunFailed, run_plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.xdist_group("dist")]
RUN = {"model": "tiny-llama", "global_batch": 4, "seq_len": 32, "log_every": 0, "timeout_s": 3600}


def _plan(tmp_path):
    return save_plan(ParallelPlan(dp=2), tmp_path / "in.json")


def test_killed_rank_stops_the_job_with_rank_and_signal(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAPLAN_FAULT", "rank=1,step=2,mode=kill")
    t0 = time.monotonic()
    with pytest.raises(RunFailed, match=r"rank 1 died from signal SIGKILL") as info:
        run_plan(_plan(tmp_path), out=tmp_path / "run", steps=50, stream=None, **RUN)
    assert time.monotonic() - t0 < 600 < RUN["timeout_s"]
    assert info.value.returncode != 0
    assert "\n" not in str(info.value)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] < 50  # it stopped early, it did not run on


def test_rank_that_raises_is_named_with_its_exception(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAPLAN_FAULT", "rank=1,step=1,mode=raise")
    with pytest.raises(RunFailed, match=r"rank 1 failed: RuntimeError: injected fault .* at step 1 \(at train\.py"):
        run_plan(_plan(tmp_path), out=tmp_path / "run", steps=50, stream=None, **RUN)
    record = json.loads((tmp_path / "run" / "failures" / "rank1.json").read_text())
    assert record["rank"] == 1 and "injected fault" in record["error"]


def test_restart_resumes_from_last_complete_checkpoint(tmp_path, monkeypatch):
    # rank 0 is SIGKILLed while the step-4 checkpoint is being written: step 2 stays the latest complete one
    monkeypatch.setenv("PARAPLAN_FAULT", "rank=0,step=4,mode=ckpt-kill")
    result = run_plan(_plan(tmp_path), out=tmp_path / "run", steps=6, ckpt_every=2, max_restarts=1,
                      stream=None, **RUN)
    assert result.restarts == 1
    assert [r["step"] for r in result.metrics] == [1, 2, 3, 4, 5, 6]  # steps 3-4 were re-run once, not twice
    assert [r["attempt"] for r in result.metrics] == [0, 0, 1, 1, 1, 1]  # resumed after step 2
    assert result.losses == pytest.approx(reference_losses("tiny-llama", steps=6, global_batch=4, seq_len=32),
                                          rel=1e-5)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-00000004", "step-00000006"]
