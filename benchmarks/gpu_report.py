"""The GPU benchmark's table in docs/VALIDATION.md (section `gpu`, written atomically) and its CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from costmodel.atomic import update_section, write_text_atomic
from costmodel.calibration.profile_spec import profile_provenance

__all__ = ["write_gpu_report"]


def write_gpu_report(df: pd.DataFrame, *, doc: Path, device: str, profile: object, steps: int) -> None:
    """Replace the `gpu` section of `doc` with the table of `df` (one row per case)."""
    lines = [
        "## Single-GPU runs: executor vs plain torch loop vs estimate (stack paraplan)", "",
        "Reproduce: `make bench-gpu` (= `python -m benchmarks gpu`) on a CUDA machine. "
        f"Device: {device}; {steps} steps per run, median of steps 2..; GPU profile: {profile_provenance(profile)}.",
        "Errors are predicted / measured executor step time - 1. Peaks: the estimate's (fp32 gradients, as "
        "the executor keeps them) vs torch.cuda.max_memory_allocated / max_memory_reserved.", "",
        "| model | seq | plan | executor s | plain loop s | overhead | predicted s (no profile) | error | "
        "predicted s (profile) | error | predicted GiB | executor alloc GiB | plain alloc GiB | plain reserved GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.model} | {r.seq_len} | {r.plan} | {r.measured_executor_s:.3f} | {r.measured_plain_s:.3f} | "
            f"{r.executor_overhead:+.1%} | {r.predicted_no_profile_s:.3f} | {r.error_no_profile:+.1%} | "
            f"{r.predicted_profile_s:.3f} | {r.error_profile:+.1%} | {r.predicted_peak_gib:.1f} | "
            f"{r.executor_peak_allocated_gib:.1f} | {r.plain_peak_allocated_gib:.1f} | {r.plain_peak_reserved_gib:.1f} |")
    lines += ["", f"Mean |error|: without a profile {df['error_no_profile'].abs().mean():.1%}, with the measured "
              f"profile {df['error_profile'].abs().mean():.1%} (max {df['error_profile'].abs().max():.1%})."]
    update_section(doc, "gpu", "\n".join(lines) + "\n", title="Validation")
    write_text_atomic(Path(doc).with_name("validation_gpu.csv"), df.to_csv(index=False))
