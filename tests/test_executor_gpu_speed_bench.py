"""The executor-speed GPU benchmark's CPU path on tiny shapes: every loop (plain eager, plain compiled,
executor) trains and is timed, the table and the goals' ratios are written, a spent budget skips loops,
and without a GPU the benchmark says so and ends normally."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.bench_gpu_speed import CASES, Case, format_table, main, measure_case

TINY = Case("tiny", "tiny-llama", seq_len=16, global_batch=4, micro_batch=2, recompute="full", dtype="fp32")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_loop_runs_on_cpu_and_the_table_has_the_ratios():
    rows = measure_case(TINY, device=torch.device("cpu"), steps=1, warmup=1)
    assert [r["loop"] for r in rows] == ["eager", "compiled", "executor"]
    assert all(r["step_s"] > 0 and math.isfinite(r["loss"]) and r["peak_gib"] is None for r in rows), rows
    table = format_table(rows, (TINY,))
    assert "tiny: executor" in table and "the compiled loop's speed" in table and "the eager loop's speed" in table


def test_a_spent_budget_skips_loops():
    rows = measure_case(TINY, device=torch.device("cpu"), deadline_s=0.0)
    assert {r["skipped"] for r in rows} == {"time budget spent"}
    assert "time budget spent" in format_table(rows, (TINY,))


def test_a_failing_loop_is_reported_and_the_others_go_on():
    fp8 = Case("tiny-fp8", "tiny-llama", seq_len=16, global_batch=4, micro_batch=2, dtype="fp8",
               loops=("executor",))
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU; fp8 may run here")
    (row,) = measure_case(fp8, device=torch.device("cpu"))
    assert row["skipped"].startswith("failed: ValueError: dtype: fp8"), row


def test_cases_are_the_gpu_data_sets_plus_fp8():
    assert [c.name for c in CASES] == ["gpt3-1.3b", "llama-3.2-1b", "llama2-7b-full", "llama2-7b-full-fp8"]
    llama = CASES[1].spec()
    assert (llama.hidden_size, llama.num_layers, llama.vocab_size, llama.tie_embeddings) == (2048, 16, 128256, True)
    assert CASES[3].dtype == "fp8" and CASES[3].compare_to == "llama2-7b-full"


def test_without_a_gpu_it_says_so_and_returns(capsys):
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    assert main([]) is None
    assert "no CUDA device" in capsys.readouterr().out
