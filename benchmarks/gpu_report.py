"""The GPU benchmark's table in docs/VALIDATION.md (section `gpu`, written atomically) and its CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from costmodel.atomic import update_section, write_text_atomic
from costmodel.calibration.profile_spec import profile_provenance

__all__ = ["write_gpu_report", "memory_lines"]


def write_gpu_report(df: pd.DataFrame, *, doc: Path, device: str, profile: object, steps: int) -> None:
    """Replace the `gpu` section of `doc` with the table of `df` (one row per case)."""
    lines = [
        "## Single-GPU runs: executor vs plain torch loop vs estimate (stack paraplan)", "",
        "Reproduce: `make bench-gpu` (= `python -m benchmarks gpu`) on a CUDA machine. "
        f"Device: {device}; {steps} steps per run, median of steps 2..; GPU profile: {profile_provenance(profile)}.",
        "Errors are predicted / measured executor step time - 1.", "",
        "| model | seq | plan | executor s | plain loop s | overhead | predicted s (no profile) | error | "
        "predicted s (profile) | error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.model} | {r.seq_len} | {r.plan} | {r.measured_executor_s:.3f} | {r.measured_plain_s:.3f} | "
            f"{r.executor_overhead:+.1%} | {r.predicted_no_profile_s:.3f} | {r.error_no_profile:+.1%} | "
            f"{r.predicted_profile_s:.3f} | {r.error_profile:+.1%} |")
    lines += ["", f"Mean |error|: without a profile {df['error_no_profile'].abs().mean():.1%}, with the measured "
              f"profile {df['error_profile'].abs().mean():.1%} (max {df['error_profile'].abs().max():.1%}).", ""]
    lines += memory_lines(df)
    update_section(doc, "gpu", "\n".join(lines) + "\n", title="Validation")
    write_text_atomic(Path(doc).with_name("validation_gpu.csv"), df.to_csv(index=False))


def memory_lines(df: pd.DataFrame) -> list[str]:
    """The memory table: predicted (stack paraplan) vs the executor's and the plain loop's allocated and
    reserved peaks, with the targets (`benchmarks.gpu_memory.MEMORY_TARGETS`)."""
    lines = ["Memory (GiB): predicted allocated / reserved peak (stack `paraplan`, `costmodel.step.memory`) vs "
             "torch.cuda.max_memory_allocated / max_memory_reserved of the executor (max over ranks) and of the "
             "plain loop. Target: allocated within 5% and never more than 3% under the executor's.", "",
             "| model | seq | plan | predicted alloc | executor alloc | error | predicted reserved | executor reserved | "
             "error | plain alloc | plain reserved | executor vs plain alloc | peak moment | target met |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(
            f"| {r.model} | {r.seq_len} | {r.plan} | {r.predicted_allocated_gib:.2f} | {r.executor_allocated_gib:.2f} | "
            f"{r.allocated_error:+.1%} | {r.predicted_reserved_gib:.2f} | {r.executor_reserved_gib:.2f} | "
            f"{r.reserved_error:+.1%} | {r.plain_allocated_gib:.2f} | {r.plain_reserved_gib:.2f} | "
            f"{r.executor_vs_plain_allocated:+.1%} | {r.peak_moment} | {'yes' if r.allocated_ok else 'no'} |")
    alloc = df["allocated_error"].abs()
    lines += ["", f"Allocated: mean |error| {alloc.mean():.1%}, max {alloc.max():.1%}, most under "
              f"{min(0.0, df['allocated_error'].min()):+.1%}; reserved: mean |error| "
              f"{df['reserved_error'].abs().mean():.1%}; {int(df['allocated_ok'].sum())} of {len(df)} cases meet the target."]
    return lines
