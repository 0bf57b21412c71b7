"""Slurm for real: a one-node cluster on 127.0.0.1 (tests/_slurm_cluster.py) runs the sbatch script that
`paraplan launch --on slurm --submit` writes for a tiny-llama dp2 plan, to completion; `--status` follows
the job; the run's losses are the single-process run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from _executor_reference import reference_losses
from _slurm_cluster import local_slurm, missing_slurm

from costmodel import ParallelPlan, StepMeasurement, save_plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("dist"),
              pytest.mark.skipif(missing_slurm() is not None, reason=str(missing_slurm()))]
STEPS, BATCH, SEQ = 4, 4, 32


def _paraplan(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "planner.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120, check=False)


def test_submit_runs_a_dp2_plan_to_completion(tmp_path):
    plan = save_plan(ParallelPlan(dp=2), tmp_path / "plan.json")
    with local_slurm() as env:
        done = _paraplan("launch", str(plan), "--on", "slurm", "--cluster", "cpu", "--submit", "--steps", str(STEPS),
                         "--global-batch", str(BATCH), "--seq-len", str(SEQ), "--ckpt-every", "2", "--log-every", "1",
                         "--out", str(tmp_path / "run"), "--file", str(tmp_path / "job.sbatch"), env=env)
        assert done.returncode == 0, done.stderr
        job = done.stdout.strip()
        assert job.isdigit() and f"paraplan launch --status {job}" in done.stderr
        deadline, state = time.monotonic() + 240, ""
        while time.monotonic() < deadline:
            status = _paraplan("launch", "--status", job, env=env)
            assert status.returncode == 0, status.stderr
            state = status.stdout.split(":", 1)[1].split(",")[0].strip()
            if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                break
            time.sleep(1)
        log = next(tmp_path.glob(f"*-{job}.out")).read_text()
        assert state == "COMPLETED", log[-3000:]
        unknown = _paraplan("launch", "--status", "999999", env=env)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "999999" in unknown.stderr
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    summary = StepMeasurement.model_validate_json((run / "summary.json").read_text())
    assert summary.world_size == 2 and summary.plan == ParallelPlan(dp=2) and summary.steps == STEPS
    assert list(summary.losses) == pytest.approx(reference_losses("tiny-llama", steps=STEPS, global_batch=BATCH,
                                                                  seq_len=SEQ), rel=1e-5)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
