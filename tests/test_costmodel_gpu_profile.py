"""Operator-level GPU profiles: measured on CPU tensors with tiny shapes (the same code runs on CUDA),
priced per operator by the cost model, refused for another GPU, and the shipped-profile default."""

from __future__ import annotations

import pytest
import torch

from costmodel import ParallelPlan, TrainingSpec, estimate, get_cluster, load_model
from costmodel.calibration import gpu_profiles
from costmodel.calibration.gpu_profiles import load_gpu_profile
from costmodel.calibration.profile.operators import (
    fp8_supported,
    measure_attention,
    measure_mem_ops,
    measure_optimizer_steps,
)
from costmodel.calibration.profile_spec import (
    AttentionPoint,
    CalibrationProfile,
    GemmPoint,
    MemOpPoint,
    OptimizerPoint,
    save_profile,
)
from planner.cli import main

CPU = torch.device("cpu")


def test_operator_benchmarks_run_on_cpu_tensors() -> None:
    model, gen = load_model("tiny-llama"), torch.Generator().manual_seed(0)
    attn = list(measure_attention(model, seqs=[32], batch=1, dtype=torch.float32, dtype_name="fp32", device=CPU,
                                  repeats=1, gen=gen))
    assert len(attn) == 1 and attn[0].causal and attn[0].bwd_time_s > 0 and attn[0].flops_per_s > 0
    ops = list(measure_mem_ops(model, tokens=[16], dtype=torch.float32, device=CPU, repeats=1, gen=gen))
    assert {p.op for p in ops} == {"norm", "add", "activation", "rope", "cast", "copy", "cross_entropy", "embedding"}
    assert all(p.bw_bytes_per_s > 0 for p in ops) and any(p.bwd_time_s for p in ops)
    opt = list(measure_optimizer_steps(params=4096, device=CPU, repeats=1))
    assert {p.impl for p in opt} <= {"fused", "foreach"} and "foreach" in {p.impl for p in opt}
    assert not fp8_supported(CPU)


def _h200_profile(scale: float = 1.0) -> CalibrationProfile:
    gemm = tuple(GemmPoint(m=m, n=n, k=k, dtype="bf16", time_s=2 * m * n * k / (6e14 * scale),
                           flops_per_s=6e14 * scale) for m in (512, 8192) for n in (2048, 8192) for k in (2048, 8192))
    attn = (AttentionPoint(batch=1, heads=16, seq=2048, head_dim=128, dtype="bf16", time_s=1e-3, flops_per_s=3e14 * scale,
                           bwd_time_s=2.5 * 1e-3 / 0.8),)
    mem = tuple(MemOpPoint(op=op, nbytes=b, time_s=b / (3e12 * scale), bw_bytes_per_s=3e12 * scale)
                for op in ("norm", "add", "activation", "cast", "copy", "cross_entropy") for b in (1e6, 1e9))
    opt = (OptimizerPoint(impl="foreach", params=1 << 26, time_s=0.02), OptimizerPoint(impl="fused", params=1 << 26,
                                                                                       time_s=0.008))
    return CalibrationProfile(device="NVIDIA H200", gpu="h200", torch_version="2.11", cuda_version="13.0",
                              driver_version="580.00", created_utc="2026-12-04T00:00:00+00:00", gemm=gemm, attention=attn,
                              mem_ops=mem, optimizer=opt)


def test_the_cost_model_prices_each_operator_from_the_profile() -> None:
    model, cluster = load_model("gpt3-1.3b"), get_cluster("dgx-h200", nodes=1, gpus_per_node=1)
    training, plan = TrainingSpec(global_batch_size=16, seq_len=2048, stack="paraplan"), ParallelPlan(micro_batch_size=4)
    slow, fast = _h200_profile(1.0), _h200_profile(2.0)
    a = estimate(model, cluster, training, plan, calibration=slow)
    b = estimate(model, cluster, training, plan, calibration=fast)
    assert b.time.compute_s == pytest.approx(a.time.compute_s / 2, rel=0.1)   # every operator twice as fast
    assert a.gpu_profile and "NVIDIA H200" in a.gpu_profile and "driver 580.00" in a.gpu_profile
    assert a.time.optimizer_s == pytest.approx(1.3e9 / (1 << 26) * 0.008, rel=0.2)   # fused, as paraplan runs on CUDA
    none = estimate(model, cluster, training, plan, calibration=False)
    assert none.gpu_profile is None and none.step_time_s != a.step_time_s


def test_element_wise_backward_is_priced_from_its_measured_ratio() -> None:
    """A norm whose measured backward takes 10x its forward (autograd's several kernels) costs that
    much in the step's backward; without a measured backward the 2x streaming rule stays."""
    model, cluster = load_model("gpt3-1.3b"), get_cluster("dgx-h200", nodes=1, gpus_per_node=1)
    training, plan = TrainingSpec(global_batch_size=16, seq_len=2048, stack="paraplan"), ParallelPlan(micro_batch_size=4)
    base = _h200_profile()
    slow_norm = base.model_copy(update={"mem_ops": tuple(
        p.model_copy(update={"bwd_time_s": 10 * p.time_s}) if p.op == "norm" else p for p in base.mem_ops)})
    assert base.mem_op_bwd_ratio("norm", 1e7) is None and slow_norm.mem_op_bwd_ratio("norm", 1e7) == pytest.approx(10)
    assert slow_norm.mem_op_bwd_ratio("add", 1e7) is None
    a = estimate(model, cluster, training, plan, calibration=base)
    b = estimate(model, cluster, training, plan, calibration=slow_norm)
    assert b.time.compute_s > a.time.compute_s   # only the norms' backward changed


def test_a_profile_of_another_gpu_is_refused(tmp_path, capsys) -> None:
    model, training = load_model("gpt3-1.3b"), TrainingSpec(global_batch_size=16, seq_len=2048)
    with pytest.raises(ValueError, match="measured on NVIDIA H200 .*cluster's GPU is a100-80gb"):
        estimate(model, get_cluster("dgx-a100", nodes=1), training, ParallelPlan(dp=8), calibration=_h200_profile())
    path = save_profile(_h200_profile(), tmp_path / "h200.json")
    assert main(["estimate", "--model", "gpt3-1.3b", "--cluster", "dgx-a100", "--gpu-profile", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "measured on NVIDIA H200" in err[0]
    assert main(["estimate", "--model", "gpt3-1.3b", "--cluster", "dgx-h200", "--gpu-profile", str(path)]) == 0
    assert "measured GPU profile: NVIDIA H200" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown GPU profile 'b300'; known: none shipped yet"):
        load_gpu_profile("b300")


def test_a_shipped_profile_is_the_default_for_its_gpu(tmp_path, monkeypatch) -> None:
    save_profile(_h200_profile(), tmp_path / "h200.json")
    monkeypatch.setattr(gpu_profiles, "PROFILES_DIR", tmp_path)
    assert gpu_profiles.list_gpu_profiles() == ("h200",) and load_gpu_profile("h200").gpu == "h200"
    model, training = load_model("gpt3-1.3b"), TrainingSpec(global_batch_size=16, seq_len=2048)
    est = estimate(model, get_cluster("dgx-h200", nodes=1, gpus_per_node=1), training, ParallelPlan())
    assert est.gpu_profile and "NVIDIA H200" in est.gpu_profile
    other = estimate(model, get_cluster("dgx-a100", nodes=1, gpus_per_node=1), training, ParallelPlan())
    assert other.gpu_profile is None
