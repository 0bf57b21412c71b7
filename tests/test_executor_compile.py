"""Compiled blocks and float8: losses of compiled blocks match eager (CPU: inductor's C++ backend; CUDA
when present), the flags reach the worker, and fp8 runs where the GPU has fp8 tensor cores and is
refused with one line elsewhere."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from costmodel import ParallelPlan, TrainingSpec, load_model, save_plan
from executor.compile import apply_compile, async_tp_applies, compile_unsupported, default_compile
from executor.engine import build_engine, compute_dtype
from executor.float8 import float8_unsupported
from executor.launch import prepare_run
from executor.model import build_model
from executor.parity import run_losses
from planner.cli import main

SPEC = load_model("tiny-llama")
TRAINING = TrainingSpec(global_batch_size=4, seq_len=16, dtype="fp32")
HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
CUDA = torch.cuda.is_available()
FP8_GPU = CUDA and torch.cuda.get_device_capability(0) >= (8, 9)


def _max_rel(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def test_compile_defaults_and_async_tp_rule():
    assert default_compile(torch.device("cuda", 0)) and not default_compile(torch.device("cpu"))
    sp = ParallelPlan(tp=2, sequence_parallel=True)
    assert async_tp_applies(sp, torch.device("cuda", 0), compiled=True)
    assert not async_tp_applies(sp, torch.device("cuda", 0), compiled=False)  # an inductor pass
    assert not async_tp_applies(ParallelPlan(tp=2), torch.device("cuda", 0), compiled=True)  # all-reduces
    assert not async_tp_applies(sp, torch.device("cpu"), compiled=True)  # symmetric memory: CUDA only


def test_zero_bubble_plans_are_not_compiled(tmp_path):
    """A compiled block's backward is one graph: zero-bubble's split backward would run it twice."""
    zb = ParallelPlan(pp=2, schedule="zero-bubble")
    assert compile_unsupported(zb).startswith("compile: the zero-bubble schedule")
    assert not default_compile(torch.device("cuda", 0), zb) and default_compile(torch.device("cuda", 0), ParallelPlan(pp=2))
    with pytest.raises(ValueError, match="^compile: the zero-bubble"):
        prepare_run(zb, model="tiny-llama", steps=1, out=tmp_path / "r", compile=True)
    assert "--no-compile" in prepare_run(zb, model="tiny-llama", steps=1, out=tmp_path / "r", compile=False).command


def test_compiling_blocks_keeps_parameter_names():
    model = build_model(SPEC, device="meta")
    names = [n for n, _ in model.named_parameters()]
    assert apply_compile(model) == SPEC.num_layers
    assert [n for n, _ in model.named_parameters()] == names


def test_cpu_engine_is_eager_by_default():
    engine = build_engine(SPEC, ParallelPlan(), TRAINING, device=torch.device("cpu"))
    assert engine.settings == {"compile": False, "float8": False, "async_tp": False, "optimizer": "foreach"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compiled_blocks_match_eager_on_cpu():
    """Inductor's C++ backend (gcc) on one small case: full recompute, so the checkpointed block is
    what gets compiled, as on GPUs. ~20-40 s, most of it compiling one block."""
    plan = ParallelPlan(micro_batch_size=2, recompute="full")
    eager = run_losses(SPEC, plan, TRAINING, steps=10, compile=False)
    compiled = run_losses(SPEC, plan, TRAINING, steps=10, compile=True)
    assert _max_rel(compiled, eager) < 1e-5, (compiled, eager)


def test_compile_flag_reaches_the_worker(tmp_path):
    plan = save_plan(ParallelPlan(), tmp_path / "plan.json")
    for flag, want in ((True, "--compile"), (False, "--no-compile")):
        cmd = prepare_run(plan, model="tiny-llama", steps=1, out=tmp_path / "r", compile=flag).command
        assert want in cmd
    cmd = prepare_run(plan, model="tiny-llama", steps=1, out=tmp_path / "r").command
    assert "--compile" not in cmd and "--no-compile" not in cmd  # the worker's device decides


def test_fp8_on_cpu_is_refused_with_one_line(tmp_path, capsys):
    if CUDA:
        pytest.skip("this host has a GPU; the CPU refusal is checked on CPU-only hosts")
    reason = float8_unsupported(torch.device("cpu"))
    assert reason.startswith("dtype: fp8") and "CPU" in reason
    with pytest.raises(ValueError, match="^dtype: fp8"):
        build_engine(SPEC, ParallelPlan(), TrainingSpec(global_batch_size=4, seq_len=16, dtype="fp8"),
                     device=torch.device("cpu"))
    plan = str(save_plan(ParallelPlan(), tmp_path / "plan.json"))
    code = main(["run", plan, "--dtype", "fp8", "--steps", "1", "--out", str(tmp_path / "r"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("paraplan: error: dtype: fp8"), err


@pytest.mark.parametrize("dtype, says", [("fp16", "the executor does not train fp16"),
                                         ("bf16", "bf16 mixed precision runs on CUDA GPUs")])
def test_a_dtype_the_executor_would_not_train_in_is_refused(tmp_path, capsys, dtype, says):
    """No silent fallback: fp16 (no loss scaling) anywhere, bf16 on a CPU host; a GPU refuses fp16 at build."""
    if CUDA:
        pytest.skip("this host has a GPU; the CPU refusal is checked on CPU-only hosts")
    plan = str(save_plan(ParallelPlan(), tmp_path / "plan.json"))
    code = main(["run", plan, "--dtype", dtype, "--steps", "1", "--out", str(tmp_path / "r"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"paraplan: error: dtype: {says}"), err
    assert not (tmp_path / "r").exists()
    assert compute_dtype(TRAINING.model_copy(update={"dtype": dtype}), torch.device("cpu")) == torch.float32  # API
    with pytest.raises(ValueError, match="^dtype: the executor does not train fp16"):
        compute_dtype(TRAINING.model_copy(update={"dtype": "fp16"}), torch.device("cuda", 0))


@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao is not installed (pip install 'paraplan[fp8]')")
def test_float8_conversion_swaps_block_linears_only():
    """torchao's emulated fp8 (plain matmuls on fp8-cast tensors) runs on CPU: the swap is checked here,
    the fp8 kernels on a GPU (test_fp8_trains_on_gpu)."""
    from torchao.float8.float8_linear import Float8Linear

    from executor.float8 import apply_float8
    from executor.init import init_weights

    def build(fp8: bool) -> torch.nn.Module:
        model = build_model(SPEC, device="meta")
        if fp8:
            assert apply_float8(model, emulate=True) == 7 * SPEC.num_layers  # q k v o, w1 w3 w2
        model.to_empty(device="cpu")
        init_weights(model, SPEC, seed=0)
        return model

    ref, fp8 = build(False), build(True)
    assert type(fp8.output) is torch.nn.Linear and isinstance(fp8.layers["0"].feed_forward.w2, Float8Linear)
    assert [n for n, _ in fp8.named_parameters()] == [n for n, _ in ref.named_parameters()]
    x = torch.randint(0, SPEC.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    losses = [torch.nn.functional.cross_entropy(m(x).flatten(0, 1), x.flatten()) for m in (ref, fp8)]
    losses[1].backward()
    assert abs(losses[1].item() / losses[0].item() - 1) < 1e-2
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fp8.parameters())


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (inductor's Triton backend)")
def test_compiled_blocks_match_eager_on_gpu():
    plan = ParallelPlan(micro_batch_size=2, recompute="full")
    kw = {"steps": 10, "device": torch.device("cuda", 0)}
    eager = run_losses(SPEC, plan, TRAINING, compile=False, **kw)
    compiled = run_losses(SPEC, plan, TRAINING, compile=True, **kw)
    assert _max_rel(compiled, eager) < 1e-5, (compiled, eager)


@pytest.mark.skipif(not FP8_GPU, reason="needs a GPU with compute capability >= 8.9 (fp8 tensor cores)")
@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao is not installed (pip install 'paraplan[fp8]')")
def test_fp8_trains_on_gpu():
    """Smoke: fp8 linears compiled on the GPU train like bf16 (losses finite, within 2% of bf16's)."""
    plan = ParallelPlan(micro_batch_size=2)
    kw = {"steps": 8, "device": torch.device("cuda", 0), "compile": True}
    bf16 = run_losses(SPEC, plan, TRAINING.model_copy(update={"dtype": "bf16"}), **kw)
    fp8 = run_losses(SPEC, plan, TRAINING.model_copy(update={"dtype": "fp8"}), **kw)
    assert all(math.isfinite(x) for x in fp8) and fp8[-1] < fp8[0]
    assert _max_rel(fp8, bf16) < 2e-2, (fp8, bf16)


@pytest.mark.skipif(not CUDA or FP8_GPU, reason="needs a CUDA GPU without fp8 tensor cores (compute capability < 8.9)")
def test_fp8_on_an_older_gpu_is_refused():
    with pytest.raises(ValueError, match="^dtype: fp8 training needs compute capability >= 8.9"):
        build_engine(SPEC, ParallelPlan(), TRAINING.model_copy(update={"dtype": "fp8"}), device=torch.device("cuda", 0))
