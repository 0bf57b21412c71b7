"""The GPU benchmark's code paths that run without a GPU: the skip, the plain loop on CPU, the report."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from benchmarks import bench_gpu
from benchmarks.gpu_loop import plain_loop
from benchmarks.gpu_report import write_gpu_report
from costmodel import load_model
from costmodel.calibration.profile_spec import CalibrationProfile


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_without_a_gpu_it_says_so(capsys) -> None:
    bench_gpu.main()
    assert "no CUDA GPU" in capsys.readouterr().out


def test_plain_loop_trains_on_cpu() -> None:
    r = plain_loop(load_model("tiny-llama"), global_batch=4, micro_batch=2, seq_len=16, recompute="full", steps=2,
                   device="cpu")
    assert r.step_time_s > 0 and r.max_allocated_bytes == 0


def test_report_section_and_csv(tmp_path) -> None:
    doc = tmp_path / "VALIDATION.md"
    doc.write_text("# Validation\n\n<!-- other:begin -->\nkeep\n<!-- other:end -->\n")
    df = pd.DataFrame([{"model": "gpt3-1.3b", "seq_len": 2048, "plan": "dp1-tp1-pp1-mb4", "measured_executor_s": 0.76,
                        "measured_plain_s": 0.75, "executor_overhead": 0.013, "predicted_no_profile_s": 0.69,
                        "error_no_profile": -0.09, "predicted_profile_s": 0.75, "error_profile": -0.013,
                        "predicted_peak_gib": 40.0, "executor_peak_allocated_gib": 41.8,
                        "plain_peak_allocated_gib": 42.6, "plain_peak_reserved_gib": 44.0}])
    profile = CalibrationProfile(device="NVIDIA H200", gpu="h200", torch_version="2.11", cuda_version="13.0")
    write_gpu_report(df, doc=doc, device="NVIDIA H200", profile=profile, steps=8)
    text = doc.read_text()
    assert "keep" in text and "<!-- gpu:begin -->" in text and "| gpt3-1.3b | 2048 |" in text and "-1.3%" in text
    assert (tmp_path / "validation_gpu.csv").read_text().startswith("model,")
