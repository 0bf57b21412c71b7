"""The profiler: option parsing, and real measurements at a small size (2 Gloo processes on CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from costmodel import load_model
from costmodel.calibration.profile import ProfileConfig, catalog_gpu_name, run_profile
from costmodel.calibration.profile.compute import gemm_shapes
from costmodel.calibration.profile.options import parse_nprocs, parse_ops, parse_sizes
from costmodel.calibration.profile_spec import load_profile
from planner.cli import main

SMALL = ["--model", "tiny-gpt", "--device", "cpu", "--nprocs", "2", "--sizes", "4KB,256KB",
         "--ops", "all_reduce,all_gather,send_recv", "--repeats", "5", "--seed", "7", "--timeout", "150", "--threads", "1"]


def test_option_parsing() -> None:
    assert parse_sizes("1KB-64KB") == (1024, 4096, 16384, 65536)
    assert parse_sizes("1MB,4KB") == (4096, 1 << 20)
    assert parse_nprocs("4,2") == (2, 4) and parse_nprocs("0") == ()
    assert parse_ops("all_reduce") == ("all_reduce",)
    with pytest.raises(ValueError, match="--sizes"):
        parse_sizes("1XB")
    with pytest.raises(ValueError, match="--nprocs"):
        parse_nprocs("1")
    with pytest.raises(ValueError, match="--ops"):
        parse_ops("broadcast")


def test_gemm_shapes_follow_the_model_and_respect_the_flop_cap() -> None:
    model = load_model("llama2-7b")
    shapes = gemm_shapes(model, tokens=4096, max_flop=1e9)
    assert (min(4096, int(1e9 // (2 * 4096 * 11008 * 2))), 11008 * 2, 4096) in shapes  # gated MLP up
    assert any(n == model.vocab_size for _, n, _ in shapes)
    assert all(2 * m * n * k <= 1e9 or m == 1 for m, n, k in shapes)


def test_catalog_gpu_names() -> None:
    assert catalog_gpu_name("cpu") == "cpu"
    assert catalog_gpu_name("NVIDIA H200") == "h200"
    assert catalog_gpu_name("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert catalog_gpu_name("Some Accelerator") is None


def test_bad_profile_options_exit_2(capsys) -> None:
    assert main(["profile", "--nprocs", "1", "--out", "x.json"]) == 2
    assert "--nprocs" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.xdist_group("dist")
def test_profile_writes_a_valid_profile_and_repeats_within_noise(tmp_path) -> None:
    out = tmp_path / "profile.json"
    assert main(["profile", "--out", str(out), "--no-progress", *SMALL]) == 0
    first = load_profile(out)
    assert first.device == "cpu" and first.gpu == "cpu" and first.backend == "gloo"
    assert first.torch_version and first.model == "tiny-gpt" and first.seed == 7 and first.threads == 1
    assert first.gemm and first.attention and first.mem_bw
    assert {(c.op, c.group_size, c.nbytes) for c in first.collectives} == {
        (op, 2, s) for op in ("all_reduce", "all_gather", "send_recv") for s in (4096.0, 262144.0)}
    assert first.gemm_flops_per_s(64, 64, 64, "fp32") is not None
    assert first.collective_time_s("all_reduce", 65536, 2) is not None
    # eager host cost per block (CPU): plain, recomputed, and tensor parallel over 2 Gloo processes
    host = first.host
    assert host is not None and host.tp_group_size == 2 and host.aten_ops_per_block > 50
    assert host.block_tp_s > host.block_s and host.block_tp_sp_s > 0 and host.block_full_recompute_s > host.block_s
    # the CPU a block costs with 2 workers at once vs alone (oversubscription), both measured
    assert set(host.concurrent_block_cpu_s) == {2} and host.block_cpu_s > host.block_s
    assert 0.3 < host.concurrent_block_cpu_s[2] / host.block_cpu_s < 5

    second = run_profile(ProfileConfig(model="tiny-gpt", device="cpu", nprocs=(2,), sizes_bytes=(4096, 262144),
                                       ops=("all_reduce", "all_gather", "send_recv"), repeats=5, seed=7, threads=1,
                                       timeout_s=150, progress=False, host=False))
    assert [(g.m, g.n, g.k) for g in second.gemm] == [(g.m, g.n, g.k) for g in first.gemm]
    # Same seed, same shapes: the typical point agrees within run-to-run noise on a shared 2-core host
    # (median ratio within 3x). One compute thread: with 2 OpenMP threads on 2 busy cores a thread
    # descheduled at a barrier stalls tiny GEMMs by milliseconds, which is interference, not noise.
    gemm_ratio = np.median([a.flops_per_s / b.flops_per_s for a, b in zip(first.gemm, second.gemm, strict=True)])
    assert 1 / 3 < gemm_ratio < 3
    # Collectives: compare the fastest of each point's timings (the link's capability); the median of a
    # handful of 4 KB Gloo round trips mostly measures whatever the other test worker is doing.
    def fastest(c):
        return min(c.samples_s) if c.samples_s else c.time_s

    pairs = {(c.op, c.nbytes): fastest(c) for c in first.collectives}
    coll_ratio = np.median([pairs[(c.op, c.nbytes)] / fastest(c) for c in second.collectives])
    assert 1 / 3 < coll_ratio < 3


def _executor_block_ops(spec) -> int:
    import torch

    from costmodel.calibration.profile.host import count_aten_ops
    from executor.model import TransformerBlock, rope_cache

    torch.manual_seed(0)
    block = TransformerBlock(spec)
    x = torch.randn(1, 8, spec.hidden_size, requires_grad=True)
    rope = rope_cache(spec) if spec.position == "rope" else None
    return count_aten_ops(lambda: block(x, rope).float().sum().backward())


@pytest.mark.parametrize("name", ["small-llama", "tiny-gpt"])
def test_reference_block_issues_the_executors_ops(name) -> None:
    """The profiler's reference block (plain torch, costmodel may not import the executor) issues about
    as many aten ops per forward + backward as the executor's real block, so its host time is theirs."""
    import torch

    from costmodel.calibration.profile.host import RefBlock, count_aten_ops

    spec = load_model(name)
    torch.manual_seed(0)
    block = RefBlock(spec)
    x = torch.randn(1, 8, spec.hidden_size, requires_grad=True)
    ref = count_aten_ops(lambda: block(x).float().sum().backward())
    assert ref == pytest.approx(_executor_block_ops(spec), rel=0.15)


def test_host_cost_is_measured_per_block_where_compute_is_negligible() -> None:
    from costmodel.calibration.profile.host_point import measure_host

    spec = load_model("small-llama")
    host = measure_host(spec, tokens=8, layers=2, repeats=3, tp=False)
    assert host.threads == 1 and host.tokens == 8 and host.block_tp_s is None
    assert 1e-5 < host.block_s < 0.1 and host.aten_ops_per_block > 100
    # checkpointing re-runs the forward: more host work than the plain block
    assert host.block_full_recompute_s > host.block_s
    assert host.block_selective_recompute_s > host.block_s
    with pytest.raises(ValueError, match="tokens"):
        measure_host(spec, tokens=3, tp=False)
