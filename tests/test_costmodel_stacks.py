"""Software stacks as data: the catalog, what a stack sets, and that every estimate names its stack."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from costmodel import ParallelPlan, TrainingSpec, estimate, get_cluster, load_model
from costmodel.layer.compute import DEFAULT_EFFICIENCY
from costmodel.stacks import DEFAULT_STACK, get_stack, list_stacks, stack_efficiency
from planner.cli import main

REQUIRED = ("megatron", "deepspeed", "fsdp", "torch-compile", "paraplan")


def test_catalog_has_the_required_stacks_each_with_sources() -> None:
    assert set(REQUIRED) <= set(list_stacks())
    assert DEFAULT_STACK == "megatron" and TrainingSpec(global_batch_size=8, seq_len=64).stack == DEFAULT_STACK
    for name in list_stacks():
        stack = get_stack(name)
        assert stack.name == name and stack.sources and all(s.supports for s in stack.sources)


def test_unknown_stack_names_the_known_ones() -> None:
    with pytest.raises(ValidationError, match="known: .*fsdp.*megatron"):
        TrainingSpec(global_batch_size=8, seq_len=64, stack="jax")
    with pytest.raises(ValueError, match="stack: unknown stack 'jax'"):
        get_stack("jax")


def test_a_stack_sets_only_what_its_file_states() -> None:
    base = DEFAULT_EFFICIENCY.__class__(overlap_grad_reduce=False)
    megatron = stack_efficiency(base, get_stack("megatron"))
    assert megatron.overlap_grad_reduce is False                    # megatron.yaml is silent on it
    assert megatron.tp_overlap_with_sp and megatron.overlap_param_gather
    deepspeed = stack_efficiency(base, get_stack("deepspeed"))
    assert deepspeed.overlap_grad_reduce and deepspeed.zero3_regather_recompute and deepspeed.zero3_nic_bound
    paraplan = stack_efficiency(base, get_stack("paraplan"))
    assert paraplan.optimizer_bytes_per_param == 28 + 12 and paraplan.weight_cast_bytes == 6   # fused AdamW


def test_every_stack_estimates_and_says_so() -> None:
    model, cluster = load_model("gpt3-1.3b"), get_cluster("dgx-h100", nodes=1)
    plan = ParallelPlan(dp=8, micro_batch_size=4, zero_stage=3)
    times = {}
    for name in list_stacks():
        est = estimate(model, cluster, TrainingSpec(global_batch_size=64, seq_len=2048, stack=name), plan)
        assert est.stack == name and est.gpu_profile is None and est.step_time_s > 0
        times[name] = est.step_time_s
    # eager autocast with fp32 norms and residuals moves more bytes than compiled, fused blocks
    assert times["paraplan"] > times["torch-compile"]
    assert times["fsdp"] > times["torch-compile"]


def test_tp_overlap_hides_tensor_parallel_traffic_only_with_sequence_parallelism() -> None:
    model, cluster = load_model("llama3-70b"), get_cluster("dgx-h100", nodes=4)
    training = TrainingSpec(global_batch_size=64, seq_len=4096)
    sp = estimate(model, cluster, training, ParallelPlan(dp=4, tp=8, recompute="full", sequence_parallel=True,
                                                         zero_stage=1))
    no_sp = estimate(model, cluster, training, ParallelPlan(dp=4, tp=8, recompute="full", zero_stage=1))
    fsdp = estimate(model, cluster, training.model_copy(update={"stack": "fsdp"}),
                    ParallelPlan(dp=4, tp=8, recompute="full", sequence_parallel=True, zero_stage=1))
    assert sp.time.tp_comm_s < 0.5 * no_sp.time.tp_comm_s   # chunked overlap: about 1/tp exposed
    assert fsdp.time.tp_comm_s > 2 * sp.time.tp_comm_s        # fsdp.yaml states no TP overlap


def test_cli_stack_option(capsys) -> None:
    assert main(["estimate", "--model", "gpt3-125m", "--cluster", "dgx-a100", "--stack", "fsdp", "--seq-len", "512"]) == 0
    assert "assumes stack fsdp" in capsys.readouterr().out
    assert main(["estimate", "--model", "gpt3-125m", "--stack", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown stack 'nope'" in err[0] and "torch-compile" in err[0]


def test_full_precision_drops_the_stacks_16_bit_casts() -> None:
    """Autocast runs only for 16-bit dtypes: in fp32 the executor's stack has no weight or input casts, one
    host op per GEMM, and adds fp32 gradients only from the second micro-batch on."""
    from costmodel.layer.context import FP32_GRAD_ADD_BYTES, stack_kernels
    from costmodel.layer.params import model_shape

    shape, stack = model_shape(load_model("small-llama")), get_stack("paraplan")
    half, half_classes = stack_kernels(DEFAULT_EFFICIENCY, stack, shape, "bf16")
    full, full_classes = stack_kernels(DEFAULT_EFFICIENCY, stack, shape, "fp32")
    assert half.weight_cast_bytes > 0 and half.host_ops_per_gemm > 1 and any(c.kind == "cast" for c in half_classes)
    assert full.weight_cast_bytes == 0 and full.host_ops_per_gemm == 1 and not any(c.kind == "cast" for c in full_classes)
    assert full.grad_accumulate_bytes == FP32_GRAD_ADD_BYTES
    assert full.elementwise_kernels_per_layer < half.elementwise_kernels_per_layer


def test_cpu_host_terms_give_back_the_measured_block() -> None:
    """host_op_s is the profile's host time of the executor's block over the ops the cost model counts for
    that block (stack paraplan, fp32), so pricing the executor's block returns the measured seconds."""
    from costmodel.calibration.host_terms import _block_terms, executor_efficiency
    from costmodel.calibration.profile_spec import HostPoint
    from costmodel.layer.compute import block_host_ops

    host = HostPoint(tokens=8, threads=1, block_s=0.002, aten_ops_per_block=225)
    per_op = _block_terms(host, 1.0, "small-llama")["host_op_s"]
    ops = block_host_ops(executor_efficiency("small-llama"), cross=False, flash=True, tp=1, sp=0)
    assert 3 * ops * per_op == pytest.approx(0.002)
    assert executor_efficiency("small-llama") != DEFAULT_EFFICIENCY and executor_efficiency(None) == DEFAULT_EFFICIENCY
