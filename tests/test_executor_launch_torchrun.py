"""Two torchrun "nodes" on 127.0.0.1: the script `paraplan launch --on torchrun --nodes 2` writes, started
twice (two agents, --nnodes 2, c10d rendezvous), runs a dp2 x pp2 plan; one worker is SIGKILLed mid-run,
both agents restart their workers, and the run resumes from the newest complete checkpoint with the losses
of the uninterrupted (single-process) run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from _executor_reference import reference_losses

from costmodel import ParallelPlan, StepMeasurement, save_plan
from executor.launch import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("dist")]
STEPS, BATCH, SEQ = 6, 4, 32


def test_two_agents_survive_a_killed_worker_with_the_same_losses(tmp_path):
    plan = save_plan(ParallelPlan(dp=2, pp=2), tmp_path / "plan.json")
    script, run = tmp_path / "node.sh", tmp_path / "run"
    launch = [sys.executable, "-m", "planner.cli", "launch", str(plan), "--on", "torchrun", "--cluster", "cpu",
              "--nodes", "2", "--rdzv-host", "127.0.0.1", "--rdzv-port", str(free_port()), "--steps", str(STEPS),
              "--global-batch", str(BATCH), "--seq-len", str(SEQ), "--ckpt-every", "2", "--max-restarts", "1",
              "--timeout", "3600", "--log-every", "1", "--out", str(run)]
    done = subprocess.run([*launch, "--file", str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"bash {script}  # on each of the 2 nodes"
    # the global rank 3 (on whichever agent joined second) SIGKILLs itself after step 3, first attempt only
    env = {**os.environ, "PARAPLAN_FAULT": "rank=3,step=3,mode=kill"}
    logs = [open(tmp_path / f"node{i}.log", "w") for i in range(2)]  # noqa: SIM115 - closed below
    # one "node" runs the written script, the other `paraplan launch --submit` (which writes the same script)
    commands = [["bash", str(script)], [*launch, "--file", str(tmp_path / "node1.sh"), "--submit"]]
    agents = [subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env) for argv, log in zip(commands, logs, strict=True)]
    try:
        codes = [agent.wait(timeout=240) for agent in agents]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
        for log in logs:
            log.close()
    text = "".join((tmp_path / f"node{i}.log").read_text() for i in range(2))
    assert codes == [0, 0], text[-4000:]
    assert (tmp_path / "node1.sh").read_text() == script.read_text()
    assert "resumed from" in text and "step-00000002" in text  # the kill struck after step 3: step 2 was newest
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    expected = reference_losses("tiny-llama", steps=STEPS, global_batch=BATCH, seq_len=SEQ)
    assert [r["loss"] for r in records] == pytest.approx(expected, rel=1e-5)
    summary = StepMeasurement.model_validate_json((run / "summary.json").read_text())
    assert summary.world_size == 4 and list(summary.losses) == [r["loss"] for r in records]
