"""The central executor test: every plan's per-step losses match the single-process run.

Plans run on Gloo across processes (`torchrun -m executor.parity`), several per launch; the reference
runs in this process with no process group. 10 steps, fp32, within 1e-5 relative."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch

from costmodel import load_model
from costmodel.specs import ParallelPlan, TrainingSpec
from executor.parity import run_losses

ROOT = Path(__file__).resolve().parents[1]
STEPS = 10
RTOL = 1e-5
TRAINING = {"global_batch_size": 4, "seq_len": 16, "dtype": "fp32"}


def _case(name: str, model: str = "tiny-llama", **plan: object) -> dict:
    return {"name": name, "model": model, "plan": plan, "training": TRAINING, "steps": STEPS, "lr": 1e-3}


CASES_2 = [
    _case("dp2", dp=2),
    _case("tp2", tp=2),
    _case("tp2-sp", tp=2, sequence_parallel=True),
    _case("pp2-gpipe", pp=2, schedule="gpipe", micro_batch_size=2),
    _case("pp2-1f1b", pp=2, schedule="1f1b"),
    _case("pp2-interleaved-v2", pp=2, virtual_stages=2, schedule="interleaved-1f1b"),
    _case("pp2-zero-bubble", pp=2, schedule="zero-bubble", micro_batch_size=2),
    _case("fsdp2-zero3", dp=2, zero_stage=3),
    _case("zero1", dp=2, zero_stage=1),
    _case("zero2", dp=2, zero_stage=2, micro_batch_size=2),
    _case("dp2-recompute-full", dp=2, recompute="full"),
    _case("tp2-recompute-selective", tp=2, recompute="selective"),
    _case("tied-gpt-tp2-sp", "tied-gpt", tp=2, sequence_parallel=True),
    _case("tied-gpt-zero3", "tied-gpt", dp=2, zero_stage=3),
    _case("gpt-pp2-uneven", "tiny-gpt", pp=2, layers_per_stage=(3, 1), micro_batch_size=2),
    _case("bert-tp2-sp", "tiny-bert", tp=2, sequence_parallel=True, micro_batch_size=2),
    _case("bert-dp2-zero3", "tiny-bert", dp=2, zero_stage=3, micro_batch_size=2),
]
CASES_4 = [
    _case("dp2xtp2", dp=2, tp=2),
    _case("dp2xtp2-dp-innermost", dp=2, tp=2, placement=("dp", "tp", "cp", "pp")),
    _case("tp2xpp2", tp=2, pp=2, micro_batch_size=2),
    _case("dp2xpp2-1f1b-full", dp=2, pp=2, recompute="full"),
    _case("dp2xtp2-sp-zero3", dp=2, tp=2, zero_stage=3, sequence_parallel=True, micro_batch_size=2),
]


TIED_GPT = ("{arch: decoder, num_layers: 2, hidden_size: 64, num_heads: 4, vocab_size: 256, max_seq_len: 64, "
            "activation: gelu, norm: layernorm, position: learned, tie_embeddings: true, bias: true}")
"""A GPT-2 style model whose output layer shares the embedding table (not in the catalog)."""


def _model_file(tmp_path: Path, cases: list[dict]) -> list[dict]:
    path = tmp_path / "tied-gpt.yaml"
    path.write_text(TIED_GPT)
    return [dict(c, model=str(path)) if c["model"] == "tied-gpt" else c for c in cases]


@cache
def _reference(model: str) -> tuple[float, ...]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return tuple(run_losses(load_model(model), ParallelPlan(), TrainingSpec(**TRAINING), steps=STEPS, lr=1e-3))
    finally:
        torch.set_num_threads(threads)


def _launch(cases: list[dict], nproc: int, tmp_path: Path, *, timeout_s: float) -> dict:
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    out = tmp_path / "losses.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "executor.parity", "--cases", str(tmp_path / "cases.json"), "--out", str(out), "--timeout-s", "120"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def _check(results: dict, cases: list[dict]) -> None:
    failures = []
    for case in cases:
        got = results[case["name"]]
        ref = _reference(case["model"])
        assert len(got) == STEPS
        rel = max(abs(a - b) / abs(b) for a, b in zip(got, ref, strict=True))
        if rel > RTOL:
            failures.append(f"{case['name']}: max rel diff {rel:.2e}\n  got {got}\n  ref {list(ref)}")
    assert not failures, "\n".join(failures)


def test_reference_losses_move():
    ref = _reference("tiny-llama")
    assert len(set(ref)) == STEPS and min(ref) < ref[0]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.xdist_group("dist")
def test_two_process_plans_match_single_process(tmp_path):
    cases = _model_file(tmp_path, CASES_2)
    _check(_launch(cases, 2, tmp_path, timeout_s=850), cases)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.xdist_group("dist")
def test_four_process_plans_match_single_process(tmp_path):
    _check(_launch(CASES_4, 4, tmp_path, timeout_s=850), CASES_4)
