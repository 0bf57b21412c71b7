"""`paraplan` as a user meets it (a subprocess): every input answered correctly or refused with one
line and exit 2, never a traceback, in bounded memory; `estimate --plan FILE` estimates the whole file."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from costmodel import ParallelPlan, TrainingSpec, estimate, get_cluster, load_model

ROOT = Path(__file__).resolve().parent.parent
MEMORY_CAP = 3 << 30   # address space of each command: a run-away allocation fails instead of swapping


def paraplan(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `paraplan ARGS` (python -m planner.cli) with a capped address space."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    return subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env, preexec_fn=cap)


def refused(res: subprocess.CompletedProcess, *words: str) -> str:
    """The one error line of a refused command (exit 2), checked to name `words`."""
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paraplan: error: "), res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


GPT3 = ["--model", "gpt3-175b", "--cluster", "dgx-a100", "--nodes", "128", "--global-batch", "1536"]


def test_estimate_plan_file_is_used_whole_and_flags_override_only_what_they_name(tmp_path):
    plan = {"dp": 64, "tp": 4, "pp": 4, "zero_stage": 1, "recompute": "full", "micro_batch_size": 1}
    (tmp_path / "p.json").write_text(json.dumps(plan))
    res = paraplan("estimate", *GPT3, "--plan", "p.json", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert {k: got["plan"][k] for k in plan} == plan
    model, cluster = load_model("gpt3-175b"), get_cluster("dgx-a100", nodes=128)
    api = estimate(model, cluster, TrainingSpec(global_batch_size=1536, seq_len=2048), ParallelPlan(**plan))
    assert got["step_time_s"] == pytest.approx(api.step_time_s, rel=1e-12)
    assert got["memory"]["peak_bytes"] == pytest.approx(api.memory.peak_bytes, rel=1e-12)
    assert api.fits   # the file's plan fits: the CLI no longer turns it into dp64-tp1-pp1
    res = paraplan("estimate", *GPT3, "--plan", "p.json", "--recompute", "selective", "--json", cwd=tmp_path)
    over = json.loads(res.stdout)["plan"]
    assert over["recompute"] == "selective" and {k: over[k] for k in ("dp", "tp", "pp", "zero_stage")} == \
        {"dp": 64, "tp": 4, "pp": 4, "zero_stage": 1}


def test_a_plan_saved_with_pp_and_layers_per_stage_estimates_to_the_planners_figures(tmp_path):
    spec = ["--model", "gpt3-13b", "--nodes", "3", "--global-batch", "96", "--seq-len", "2048"]
    res = paraplan("plan", *spec, "--pp", "3", "--top-k", "1", "--json", "--save", "best.json", "--no-progress",
                   cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    best = json.loads(res.stdout)["plans"][0]
    saved = json.loads((tmp_path / "best.json").read_text())
    assert saved["pp"] == 3 and len(saved["layers_per_stage"]) == 3   # 40 layers do not divide by 3
    res = paraplan("estimate", *spec, "--plan", "best.json", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["plan"] == saved
    assert got["step_time_s"] == pytest.approx(best["step_time_s"], rel=1e-12)
    res = paraplan("estimate", *spec, "--plan", "best.json", "--pp", "2", "--json", cwd=tmp_path)
    assert res.returncode == 0 and json.loads(res.stdout)["plan"]["layers_per_stage"] is None
    assert "layers_per_stage is dropped" in res.stderr


@pytest.mark.parametrize("args, words", [
    (["estimate", "--nodes", "1000000000000"], ["num_nodes", "1,048,576"]),
    (["estimate", "--nodes", "1000000"], ["8,000,000 GPUs", "at most 131,072 nodes"]),
    (["plan", "--nodes", "1000000", "--no-progress"], ["at most 131,072 nodes"]),
    (["estimate", "--tp", "0"], ["--tp", "positive"]),
    (["estimate", "--seq-len", "0"], ["--seq-len"]),
    (["estimate", "--global-batch", "0"], ["--global-batch"]),
    (["estimate", "--dtype", "fp8"], ["a100-80gb has no fp8", "h100-sxm", "h200"]),
    (["estimate", "--cluster", "dgx1-v100"], ["v100 has no bf16", "fp16"]),
    (["estimate", "--timeline", "."], ["--timeline", "folder"]),
    (["plan", "--csv", ".", "--no-progress"], ["--csv", "folder"]),
    (["estimate", "--model", "x" * 100_000], ["unknown model"]),
    (["estimate", "--plan", "x" * 100_000], ["plan file", "does not exist"]),
    (["estimate", "--model", "m" * 100_000 + ".json"], ["model file", "does not exist"]),
    (["sweep", "--vary", "nodes", "--values", ",".join(["1"] * 65)], ["at most 64"]),
    (["profile", "--nprocs", "5000", "--out", "p.json"], ["--nprocs", "processes exceed"]),
    (["profile", "--tokens", "1000000000", "--out", "p.json"], ["tokens=1000000000"]),
    (["profile", "--sizes", "1KB-64GB", "--out", "p.json"], ["--sizes", "16 GiB"]),
    (["validate", "--local", "--procs", "500"], ["procs=500"]),
    (["calibrate", "--holdout", "1.5"], ["--holdout", "between 0 and 1"]),
])
def test_bad_input_is_one_short_line_and_exit_2(args, words, tmp_path):
    line = refused(paraplan(*args, cwd=tmp_path), *words)
    assert len(line) < 1000   # a 100k-character input is not echoed back


def test_the_largest_cluster_is_estimated_in_bounded_memory(tmp_path):
    res = paraplan("estimate", "--nodes", "131072", "--json", cwd=tmp_path)   # 2^20 GPUs, under a 3 GiB cap
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["num_gpus"] == 1 << 20


def test_a_config_with_a_billion_layers_is_refused_by_its_own_key(tmp_path):
    cfg = {"model_type": "llama", "num_hidden_layers": 10 ** 9, "hidden_size": 4096, "num_attention_heads": 32,
           "intermediate_size": 14336, "vocab_size": 128256}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    refused(paraplan("estimate", "--model", "config.json", cwd=tmp_path), "num_hidden_layers", "1,024")


def test_hugging_face_configs_are_checked_under_their_own_keys_and_folders_accepted(tmp_path):
    cfg = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
           "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 512}
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(cfg))
    res = paraplan("estimate", "--model", "tiny", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["num_gpus"] == 8
    for change, words in (({"hidden_act": "tanh"}, ["hidden_act", "'tanh'", "silu"]),
                          ({"num_hidden_layers": None}, ["num_hidden_layers"]),
                          ({"num_attention_heads": 3}, ["num_attention_heads=3"])):
        bad = {k: v for k, v in {**cfg, **change}.items() if v is not None}
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        line = refused(paraplan("estimate", "--model", "bad.json", cwd=tmp_path), *words)
        assert "num_layers" not in line and "num_heads=" not in line
    refused(paraplan("estimate", "--model", ".", cwd=tmp_path), "holds no config.json")


def test_plan_files_hold_whole_numbers(tmp_path):
    (tmp_path / "p.json").write_text('{"dp": true}')
    refused(paraplan("estimate", "--plan", "p.json", cwd=tmp_path), "dp: must be a whole number, got True")


def test_the_timeline_keeps_the_estimate_and_shows_gradient_reduction_and_optimizer(tmp_path):
    args = [*GPT3, "--tp", "8", "--pp", "16", "--dp", "8", "--recompute", "full", "--json"]
    plain = json.loads(paraplan("estimate", *args, cwd=tmp_path).stdout)
    res = paraplan("estimate", *args, "--timeline", "trace.json", cwd=tmp_path)
    traced = json.loads(res.stdout)
    assert traced["step_time_s"] == plain["step_time_s"] and traced["time"] == plain["time"]
    events = [e for e in json.loads((tmp_path / "trace.json").read_text())["traceEvents"] if e["ph"] == "X"]
    kinds = {e["cat"] for e in events}
    assert {"fwd", "bwd", "send", "dp_comm", "optimizer"} <= kinds
    assert {e["tid"] for e in events if e["cat"] == "optimizer"} == set(range(16))
    end_s = max(e["ts"] + e["dur"] for e in events) / 1e6
    assert end_s == pytest.approx(plain["step_time_s"], rel=1e-9)


def test_estimate_output_cut_short_by_the_reader_is_no_traceback(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "planner.cli", "estimate", *GPT3, "--tp", "8", "--pp", "16",
                             "--dp", "8", "--json", "--timeline", "t.json"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.stdout.close()   # like `| head -0`: the reader leaves before the output
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_sweep_over_nodes_scales_the_global_batch_unless_one_is_given(tmp_path):
    args = ["sweep", "--model", "gpt3-1.3b", "--vary", "nodes", "--values", "1,2", "--max-pp", "2",
            "--max-micro-batch", "2", "--no-progress", "--csv", "s.csv"]
    res = paraplan(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "8 sequences per GPU" in res.stderr and "--global-batch" in res.stderr
    assert pd.read_csv(tmp_path / "s.csv")["global_batch_size"].tolist() == [64, 128]
    res = paraplan(*args, "--global-batch", "64", cwd=tmp_path)
    assert res.returncode == 0 and "per GPU" not in res.stderr
    assert pd.read_csv(tmp_path / "s.csv")["global_batch_size"].tolist() == [64, 64]
    assert "the global batch grows with the cluster" in " ".join(paraplan("sweep", "--help").stdout.split())
