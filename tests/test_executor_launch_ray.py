"""Ray for real: `paraplan launch --on ray --submit` starts a local Ray instance (2 CPUs, loopback only)
and trains tiny-llama dp2 through Ray Train's TorchTrainer running the executor's loop. One worker is
SIGKILLed after step 3: Ray restarts the worker group, hands back the newest checkpoint it was given
(step 2, written in place under Ray's storage path) and the losses equal those of `paraplan run`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from _executor_reference import reference_losses

from costmodel import ParallelPlan, StepMeasurement, save_plan
from executor.launch import run_plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400), pytest.mark.xdist_group("dist"),
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="ray not installed (pip install -e '.[ray]')")]
STEPS, BATCH, SEQ = 5, 4, 32


def test_ray_train_matches_paraplan_run_through_a_worker_failure(tmp_path):
    plan = save_plan(ParallelPlan(dp=2), tmp_path / "plan.json")
    run = tmp_path / "ray-run"
    env = {**os.environ, "PARAPLAN_FAULT": "rank=1,step=3,mode=kill", "GLOO_SOCKET_IFNAME": "lo",
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "planner.cli", "launch", str(plan), "--on", "ray", "--cluster", "cpu", "--submit",
         "--ray-cpus", "2", "--steps", str(STEPS), "--global-batch", str(BATCH), "--seq-len", str(SEQ),
         "--ckpt-every", "2", "--max-restarts", "1", "--log-every", "1", "--out", str(run),
         "--file", str(tmp_path / "driver.py")],
        capture_output=True, text=True, env=env, timeout=360, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "on Ray (2 workers)" in done.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert [r["attempt"] for r in records] == [0, 0, 1, 1, 1]  # steps 3-5 after the restart from step 2
    summary = StepMeasurement.model_validate_json((run / "summary.json").read_text())
    assert summary.world_size == 2 and summary.steps == STEPS
    reference = run_plan(plan, model="tiny-llama", steps=STEPS, global_batch=BATCH, seq_len=SEQ,
                         out=tmp_path / "torchrun-run", log_every=0, stream=None)
    assert list(summary.losses) == pytest.approx(reference.losses, rel=1e-5)
    assert reference.losses == pytest.approx(reference_losses("tiny-llama", steps=STEPS, global_batch=BATCH,
                                                              seq_len=SEQ), rel=1e-5)
    assert (run / "checkpoints" / "step-00000004").is_dir()
