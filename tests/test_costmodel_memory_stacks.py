"""Memory as the stacks allocate it (costmodel/layer/{activations,states,overheads}.py, costmodel/step/memory.py):
saved-tensor tables, weight schemes, the moment that holds the peak, allocated / reserved / peak, the margin."""

from __future__ import annotations

from dataclasses import replace

import pytest

from costmodel import MEMORY_SAFETY_MARGIN, ParallelPlan, TrainingSpec, estimate, get_cluster, load_model
from costmodel.calibration.fit_data import local_cluster
from costmodel.calibration.published.h200 import LLAMA32_1B
from costmodel.layer.activations import block_activation_bytes
from costmodel.layer.params import model_shape
from costmodel.stacks import get_stack
from costmodel.step.costs import step_costs
from costmodel.step.estimate import comm_model, knobs_from_plan, step_context

GIB = 2.0**30
H200 = get_cluster("dgx-h200", nodes=1, gpus_per_node=1)


def _est(model, plan, *, stack="paraplan", cluster=H200, gb=16, seq=2048, dtype="bf16", **kw):
    return estimate(model, cluster, TrainingSpec(global_batch_size=gb, seq_len=seq, stack=stack, dtype=dtype), plan,
                    calibration=False, **kw)


def test_the_executors_autocast_block_keeps_42_bytes_per_token_and_hidden_unit():
    """GPT under CUDA autocast: fp32 norm inputs (8), a bf16 copy per linear input (8), Q/K/V, output and its
    transposed copy (10), the MLP's 2 f-wide tensors (4 f = 16 h): 42 s b h, plus the fp32 log-sum-exp."""
    shape = model_shape(load_model("gpt3-1.3b"))
    b, s = 4, 2048
    got = block_activation_bytes(get_stack("paraplan"), "autocast", shape, b, s, tp=1, sp=0, recompute_code=0,
                                 flash=True, act_bytes=2)
    assert got == 42 * s * b * shape.h + 4 * shape.a * s * b
    full = block_activation_bytes(get_stack("paraplan"), "autocast", shape, b, s, tp=1, sp=0, recompute_code=2,
                                  flash=True, act_bytes=2)
    assert full == 4 * s * b * shape.h                                     # the fp32 residual stream, only
    megatron = block_activation_bytes(get_stack("megatron"), "half", shape, b, s, tp=1, sp=0, recompute_code=0,
                                      flash=True, act_bytes=2)
    assert megatron == 34 * s * b * shape.h + 4 * shape.a * s * b          # Korthikanti Table 2 (+ lse)


def test_the_7b_peak_moves_from_the_optimizer_to_the_forward_with_fused_adamw():
    """llama2-7b, full recompute: the old executor's foreach AdamW over a whole group added a parameter-sized
    fp32 sqrt(v) temporary at the optimizer step (16 + 4 B per parameter); fused, the forward holds the peak."""
    model = load_model("llama2-7b")
    plan = ParallelPlan(micro_batch_size=1, recompute="full")
    training = TrainingSpec(global_batch_size=8, seq_len=4096, stack="paraplan")
    fused = estimate(model, H200, training, plan, calibration=False).memory
    assert fused.moment == "forward"
    stack = get_stack("paraplan")
    legacy = stack.model_copy(update={"kernels": stack.kernels.model_copy(update={"optimizer": "foreach"}),
                                      "memory": stack.memory.model_copy(update={"foreach_group": "all"})})
    ctx = replace(step_context(model, H200, training), stack=legacy, memo={})
    out = step_costs(ctx, knobs_from_plan(plan), comm_model(H200, plan))
    params = fused.optimizer_bytes / 8                                      # AdamW: 8 B of states per parameter
    assert out["peak_moment"] == 2 and out["allocated_bytes"] == pytest.approx(20 * params, rel=0.01)
    assert fused.allocated_bytes < out["allocated_bytes"]


def test_a_128k_vocabulary_loss_is_gigabytes_of_fp32_buffers():
    """Llama 3.2 1B, 2 x 4096 tokens: the fp32 log-softmax, its gradient and the nll gradient, 12 B per logit."""
    mem = _est(LLAMA32_1B, ParallelPlan(micro_batch_size=2), seq=4096).memory
    assert mem.moment == "forward" and mem.stage == 0
    assert mem.temporaries_bytes == pytest.approx(12 * 2 * 4096 * 128256)
    assert mem.reserved_bytes > mem.allocated_bytes * 1.02                   # + the freed bf16 logits' hole


def test_the_weight_schemes_keep_what_each_stack_keeps():
    model = load_model("gpt3-1.3b")
    plan = ParallelPlan(micro_batch_size=1, recompute="full")
    megatron, paraplan = (_est(model, plan, stack=s, gb=1).memory for s in ("megatron", "paraplan"))
    params = paraplan.optimizer_bytes / 8
    # Megatron: bf16 weights, fp32 main params + Adam states (12 B), fp32 gradient buffer (persistent)
    assert megatron.parameters_bytes == pytest.approx(2 * params, rel=1e-6)
    assert megatron.optimizer_bytes == pytest.approx(12 * params, rel=1e-6)
    assert megatron.gradients_bytes == pytest.approx(4 * params, rel=1e-6)
    # paraplan: fp32 parameters + autocast's bf16 copies of the linears; with one micro-batch the forward
    # holds no gradients yet, so the end of the backward (every fp32 gradient) is the peak
    assert paraplan.parameters_bytes == pytest.approx(6 * params, rel=0.01)
    assert paraplan.moment == "backward" and paraplan.gradients_bytes == pytest.approx(4 * params, rel=1e-6)
    assert paraplan.activations_bytes == 0.0


def test_a_cpu_host_has_no_allocator_cache_or_cuda_context():
    model = load_model("small-llama")
    plan = ParallelPlan(dp=2, micro_batch_size=2)
    mem = _est(model, plan, cluster=local_cluster(2), gb=8, seq=128, dtype="fp32").memory
    assert mem.reserved_bytes == mem.allocated_bytes == mem.peak_bytes and mem.context_bytes == 0
    # DDP: its buckets hold the gradients, and the micro-batch under no_sync accumulates apart
    one = _est(model, plan.model_copy(update={"micro_batch_size": 4}), cluster=local_cluster(2), gb=8, seq=128,
               dtype="fp32").memory
    assert mem.gradients_bytes == pytest.approx(2 * one.gradients_bytes)


def test_zero_bubble_keeps_the_gradients_its_weight_passes_wait_for():
    model = load_model("small-llama")
    kw = dict(cluster=local_cluster(2), gb=8, seq=128, dtype="fp32")
    zb = _est(model, ParallelPlan(pp=2, micro_batch_size=2, schedule="zero-bubble"), **kw)
    one = _est(model, ParallelPlan(pp=2, micro_batch_size=2, schedule="1f1b"), **kw)
    assert zb.stage_memory[1].activations_bytes > one.stage_memory[1].activations_bytes


def test_the_margin_decides_what_fits():
    model = load_model("llama3-8b")
    plan = ParallelPlan(dp=8, zero_stage=3, micro_batch_size=2, recompute="selective")
    cluster = get_cluster("dgx-h100", nodes=1)
    est = _est(model, plan, stack="fsdp", cluster=cluster, gb=16, seq=8192)
    assert est.memory_margin == MEMORY_SAFETY_MARGIN and est.usable_bytes == pytest.approx(0.95 * est.capacity_bytes)
    needed = est.memory.peak_bytes / est.capacity_bytes
    tight = _est(model, plan, stack="fsdp", cluster=cluster, gb=16, seq=8192, memory_margin=max(0.0, 1.01 - needed))
    loose = _est(model, plan, stack="fsdp", cluster=cluster, gb=16, seq=8192, memory_margin=max(0.0, 0.99 - needed))
    assert loose.fits and not tight.fits
    with pytest.raises(ValueError, match="memory_margin"):
        _est(model, plan, memory_margin=1.5)
