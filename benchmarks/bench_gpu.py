"""GPU benchmark (`python -m benchmarks gpu`, `make bench-gpu`): on a CUDA machine, run the executor on
single-GPU plans of several models (micro-batch, recomputation and sequence-length variants), a plain torch
loop of the same model (`benchmarks.gpu_loop`), and `estimate` (stack `paraplan`) without and with the GPU
profile measured first on the same GPU (`paraplan profile --device cuda`); print the table and write it
into docs/VALIDATION.md (section `gpu`) and docs/validation_gpu.csv. Without a GPU it says so and exits 0.

Environment: PARAPLAN_BENCH_STEPS (default 8; steps 2.. are timed), PARAPLAN_GPU_CASES (comma-separated
case numbers, default all), PARAPLAN_GPU_PROFILE (a profile file to use instead of measuring one),
PARAPLAN_GPU_DOC (default docs/VALIDATION.md; "-" prints only)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from costmodel import ParallelPlan, TrainingSpec, estimate, load_model, save_plan
from costmodel.calibration.published.h200 import LLAMA32_1B

__all__ = ["GpuCase", "CASES", "main"]

GIB = 2.0**30


@dataclass(frozen=True)
class GpuCase:
    model: str
    seq_len: int
    global_batch: int
    micro_batch: int
    recompute: str = "none"


CASES = (
    GpuCase("gpt3-1.3b", 2048, 16, 4),
    GpuCase("gpt3-1.3b", 2048, 16, 2, "full"),
    GpuCase("gpt3-1.3b", 1024, 16, 8),
    GpuCase("llama-3.2-1b", 4096, 16, 2),
    GpuCase("llama2-7b", 4096, 8, 1, "full"),
    GpuCase("llama3-8b", 8192, 8, 1, "full"),
)
"""The cases: the three of the shipped H200 runs, plus micro-batch / recomputation / sequence-length
variants and a 128k-vocabulary GQA model."""


def _spec(name: str):
    return LLAMA32_1B if name == "llama-3.2-1b" else load_model(name)


def _executor(case: GpuCase, workdir: Path, steps: int) -> tuple[float, float]:
    from executor.launch import run_plan

    plan = ParallelPlan(micro_batch_size=case.micro_batch, recompute=case.recompute)
    tag = f"{case.model}-s{case.seq_len}-mb{case.micro_batch}-{case.recompute}"
    spec = _spec(case.model)
    result = run_plan(save_plan(plan, workdir / f"{tag}.json"), model=spec, steps=steps, out=workdir / tag,
                      global_batch=case.global_batch, seq_len=case.seq_len, dtype="bf16", log_every=0, stream=None)
    if result.summary is None:
        raise RuntimeError(f"{tag}: the executor wrote no summary")
    return result.summary.step_time_s, result.summary.peak_bytes


def _profile() -> object:
    from costmodel.calibration.profile import ProfileConfig, run_profile
    from costmodel.calibration.profile_spec import load_profile, save_profile

    path = os.environ.get("PARAPLAN_GPU_PROFILE")
    if path:
        return load_profile(path)
    t0 = time.perf_counter()
    profile = run_profile(ProfileConfig(model="gpt3-1.3b", device="cuda", nprocs=None, progress=False))
    out = Path("docs") / "gpu_profile_measured.json"
    save_profile(profile, out)
    print(f"   measured the GPU profile in {time.perf_counter() - t0:.0f} s -> {out}")
    return profile


def main() -> None:
    if not torch.cuda.is_available():
        print("   no CUDA GPU on this machine: the GPU benchmark needs one (run `make bench-gpu` on a GPU host); "
              "skipped")
        return
    from costmodel.calibration.fit_data import cluster_for_device

    steps = int(os.environ.get("PARAPLAN_BENCH_STEPS", "8"))
    wanted = os.environ.get("PARAPLAN_GPU_CASES")
    cases = [CASES[int(i)] for i in wanted.split(",")] if wanted else list(CASES)
    name = torch.cuda.get_device_name(0)
    cluster = cluster_for_device(name, 1).model_copy(update={"gpus_per_node": 1, "num_nodes": 1})
    profile = _profile()
    rows = []
    with tempfile.TemporaryDirectory(prefix="paraplan-gpu-") as tmp:
        for i, case in enumerate(cases):
            spec = _spec(case.model)
            plan = ParallelPlan(micro_batch_size=case.micro_batch, recompute=case.recompute)
            training = TrainingSpec(global_batch_size=case.global_batch, seq_len=case.seq_len, stack="paraplan",
                                    grad_dtype="fp32")
            plain = _plain(spec, case, steps)
            torch.cuda.empty_cache()
            executor_s, executor_peak = _executor(case, Path(tmp), steps)
            bare = estimate(spec, cluster, training, plan, calibration=False)
            prof = estimate(spec, cluster, training, plan, calibration=profile)
            rows.append({"case": i, "model": spec.name, "seq_len": case.seq_len, "plan": plan.short(),
                         "global_batch": case.global_batch, "measured_executor_s": executor_s,
                         "measured_plain_s": plain.step_time_s, "predicted_no_profile_s": bare.step_time_s,
                         "predicted_profile_s": prof.step_time_s,
                         "error_no_profile": bare.step_time_s / executor_s - 1,
                         "error_profile": prof.step_time_s / executor_s - 1,
                         "executor_overhead": executor_s / plain.step_time_s - 1,
                         "predicted_peak_gib": prof.memory.peak_bytes / GIB,
                         "executor_peak_allocated_gib": executor_peak / GIB,
                         "plain_peak_allocated_gib": plain.max_allocated_bytes / GIB,
                         "plain_peak_reserved_gib": plain.max_reserved_bytes / GIB})
            print(f"   {spec.name:14s} s{case.seq_len:<5d} {plan.short():22s} executor {executor_s:7.3f} s  plain "
                  f"{plain.step_time_s:7.3f} s  predicted {bare.step_time_s:7.3f} s ({rows[-1]['error_no_profile']:+.1%}) "
                  f"/ with profile {prof.step_time_s:7.3f} s ({rows[-1]['error_profile']:+.1%})", flush=True)
    _report(rows, device=name, profile=profile, steps=steps)


def _plain(spec, case: GpuCase, steps: int):
    from benchmarks.gpu_loop import plain_loop

    result = plain_loop(spec, global_batch=case.global_batch, micro_batch=case.micro_batch, seq_len=case.seq_len,
                        recompute=case.recompute, steps=steps)
    torch.cuda.empty_cache()
    return result


def _report(rows: list[dict], *, device: str, profile: object, steps: int) -> None:
    import pandas as pd

    from benchmarks.gpu_report import write_gpu_report

    df = pd.DataFrame(rows)
    mean_bare, mean_prof = df["error_no_profile"].abs().mean(), df["error_profile"].abs().mean()
    print(f"   mean |error| without profile {mean_bare:.1%}, with the measured profile {mean_prof:.1%} "
          f"(max {df['error_profile'].abs().max():.1%}); executor overhead over the plain loop "
          f"{df['executor_overhead'].median():+.1%} (median)")
    doc = os.environ.get("PARAPLAN_GPU_DOC", "docs/VALIDATION.md")
    if doc != "-":
        write_gpu_report(df, doc=Path(doc), device=device, profile=profile, steps=steps)
        print(f"   wrote {doc} (section gpu) and {Path(doc).with_name('validation_gpu.csv')}")
