"""A run directory belongs to one run, through the CLI as a user meets it (`paraplan run` subprocesses):
a directory in use is refused, a killed run keeps its last complete checkpoint, a directory holding a run
is refused unless --resume (continue it) or --overwrite (replace it, checkpoints included), a resumed
run follows the help's word on the cosine length, and summary.json lists every step's loss and time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from costmodel import ParallelPlan, StepMeasurement, save_plan
from executor.checkpoint import latest_checkpoint, read_trainer_state, resolve_checkpoint
from executor.train import DEFAULT_LR, lr_at

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("dist")]
SMALL = ["--model", "tiny-llama", "--global-batch", "2", "--seq-len", "32", "--log-every", "0"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "planner.cli", "run", *argv, *SMALL], capture_output=True,
                          text=True, timeout=180, check=False)


def _error(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("paraplan: error: "), done.stderr
    return lines[0]


def _processes_using(out) -> list[int]:
    """Pids whose command line names the run directory (this test's runs)."""
    pids = []
    for proc in os.listdir("/proc"):
        try:
            with open(f"/proc/{proc}/cmdline", "rb") as f:
                if str(out).encode() in f.read():
                    pids.append(int(proc))
        except (OSError, ValueError):
            continue
    return pids


def _metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_one_run_per_directory(tmp_path):
    plan, out = str(save_plan(ParallelPlan(), tmp_path / "plan.json")), tmp_path / "run"
    # a long run with a short cosine (4 steps) and a checkpoint every 2 steps, killed (whole process group)
    first = subprocess.Popen([sys.executable, "-m", "planner.cli", "run", plan, "--out", str(out), "--steps", "2000",
                              "--lr-decay-steps", "4", "--ckpt-every", "2", *SMALL],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while latest_checkpoint(out) is None or len(_metrics(out)) < 5:
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not get going"
            time.sleep(0.2)
        busy = _run(plan, "--out", str(out), "--steps", "3")
        assert f"is in use by another paraplan run (pid {first.pid})" in _error(busy)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a crash: paraplan run and torchrun die, no clean-up runs
        first.wait(timeout=30)
    deadline = time.monotonic() + 20  # the workers (own session) die with torchrun, not on as orphans
    while _processes_using(out):
        assert time.monotonic() < deadline, f"orphaned workers still write into {out}: {_processes_using(out)}"
        time.sleep(0.2)
    kept = resolve_checkpoint(out)  # the newest complete checkpoint is readable after the kill
    step = int(read_trainer_state(kept)["step"])
    assert step >= 2

    taken = _run(plan, "--out", str(out), "--steps", "3")
    assert "already holds a run" in _error(taken) and "--resume" in taken.stderr and "--overwrite" in taken.stderr

    resumed = _run(plan, "--out", str(out), "--resume", str(out), "--steps", str(step + 2))
    assert resumed.returncode == 0, resumed.stderr
    assert f"pass --lr-decay-steps {step + 2}" in resumed.stderr  # the help's promise, said where it applies
    records = _metrics(out)
    assert [r["step"] for r in records] == list(range(1, step + 3))
    for r in records[step:]:  # the checkpoint's 4-step cosine: flat at its final lr after step 4
        assert r["lr"] == pytest.approx(lr_at(r["step"], lr=DEFAULT_LR, warmup_steps=0, decay_steps=4))
    summary = StepMeasurement.model_validate_json((out / "summary.json").read_text())
    assert list(summary.losses) == [r["loss"] for r in records] and summary.steps == step + 2
    assert list(summary.step_times_s) == [r["step_time_s"] for r in records]

    fresh = _run(plan, "--out", str(out), "--steps", "3", "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3]
    assert not (out / "checkpoints").exists()  # the old checkpoints went with the old run
    assert (tmp_path / "plan.json").is_file()


def test_help_states_the_resumed_schedule():
    done = subprocess.run([sys.executable, "-m", "planner.cli", "run", "--help"], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "a resumed run keeps its checkpoint's" in " ".join(done.stdout.split())
