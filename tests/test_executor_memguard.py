"""The memory guard of `paraplan run` (executor/memguard.py, planner/nearest.py): a plan whose predicted memory
does not fit this host is refused before any process starts, with one line naming the predicted peak, the
capacity and the nearest plan that fits; `--force` runs it anyway."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from costmodel import ParallelPlan, TrainingSpec, load_model, save_plan
from executor.memguard import (
    CPU_PROCESS_BASE_BYTES,
    MemoryRefused,
    guard_run,
    predict_run_memory,
    refuse_if_too_big,
)
from planner.nearest import nearest_fitting_plan, nearest_plan_hint, plan_distance

ROOT = Path(__file__).resolve().parents[1]


def _paraplan(*argv: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "planner.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    return proc, time.perf_counter() - t0


def test_the_cli_refuses_gpt3_175b_on_this_cpu_host_in_one_line(tmp_path):
    plan = save_plan(ParallelPlan(), tmp_path / "plan.json")
    proc, elapsed_s = _paraplan("run", str(plan), "--model", "gpt3-175b", "--steps", "1", "--out",
                                str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = lines[0]
    assert line.startswith("paraplan: error: memory: plan dp1-tp1-pp1-mb1 needs ")
    assert "GiB per process" in line and "RAM available" in line and "--force" in line
    assert "no plan on 1 processes fits" in line            # 175B needs terabytes whatever the plan
    assert not (tmp_path / "run").exists()                   # nothing started, nothing written
    assert elapsed_s < 60                                    # seconds (docs/VALIDATION.md: ~1 s of CPU)


def test_force_skips_the_guard(tmp_path):
    plan = save_plan(ParallelPlan(), tmp_path / "plan.json")
    refused, _ = _paraplan("run", str(plan), "--model", "gpt3-175b", "--dry-run", cwd=tmp_path)
    forced, _ = _paraplan("run", str(plan), "--model", "gpt3-175b", "--dry-run", "--force", cwd=tmp_path)
    assert refused.returncode == 2 and "memory:" in refused.stderr
    assert forced.returncode == 0, forced.stderr
    assert "executor.train" in forced.stdout and "--model gpt3-175b" in forced.stdout


def test_a_small_plan_passes_and_the_prediction_adds_up(tmp_path):
    plan = save_plan(ParallelPlan(dp=2), tmp_path / "plan.json")
    check = guard_run(plan, model="tiny-llama", global_batch=None, seq_len=None, dtype=None)
    assert check.fits and check.device == "cpu" and check.processes == 2
    mem = check.estimate.memory
    assert check.per_process_bytes == pytest.approx(mem.allocated_bytes + CPU_PROCESS_BASE_BYTES)
    assert check.needed_bytes == pytest.approx(2 * check.per_process_bytes + CPU_PROCESS_BASE_BYTES)
    assert mem.reserved_bytes == mem.allocated_bytes and mem.context_bytes == 0   # a CPU has no allocator cache
    assert check.training.stack == "paraplan" and check.training.dtype == "fp32"
    assert check.training.global_batch_size == 8 and check.training.seq_len == 64   # prepare_run's defaults


def test_the_nearest_plan_that_fits_keeps_the_processes_and_changes_few_knobs():
    """small-llama with micro-batch 8 and no recomputation does not fit a host with room for about half of
    its peak; the nearest plan of the same single process that fits is suggested."""
    model = load_model("small-llama")
    plan = ParallelPlan(micro_batch_size=8)
    training = TrainingSpec(global_batch_size=8, seq_len=256, dtype="fp32")
    check = predict_run_memory(model, plan, training, processes=1)
    room = 2 * CPU_PROCESS_BASE_BYTES + 0.6 * check.estimate.memory.allocated_bytes
    tight = dataclasses.replace(check, capacity_bytes=room / (1 - check.margin))
    assert not tight.fits
    cluster = tight.cluster.model_copy(update={"gpu": tight.cluster.gpu.model_copy(
        update={"hbm_bytes": tight.per_process_capacity_bytes})})
    best, result = nearest_fitting_plan(model, cluster, tight.training, plan)
    assert best is not None and best.world_size == 1 and plan_distance(best, plan) <= 2
    assert all(plan_distance(r.plan, plan) >= plan_distance(best, plan) for r in result.plans)
    fits = predict_run_memory(model, best, training, processes=1)
    assert fits.per_process_bytes - CPU_PROCESS_BASE_BYTES <= tight.per_process_capacity_bytes * (1 - tight.margin)
    assert nearest_plan_hint(tight).startswith(f"nearest plan that fits on 1 processes: {best.short()} (")


def test_refusal_is_a_value_error_naming_the_numbers():
    model = load_model("gpt3-175b")
    training = TrainingSpec(global_batch_size=8, seq_len=1024, dtype="fp32")
    with pytest.raises(MemoryRefused) as info:
        refuse_if_too_big(model, ParallelPlan(), training, processes=1)
    assert isinstance(info.value, ValueError) and not info.value.check.fits
    assert "\n" not in str(info.value) and "GiB" in str(info.value) and "--force" in str(info.value)
