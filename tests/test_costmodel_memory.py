"""Memory formulas: Korthikanti et al. 2022 Table 2, ZeRO (Rajbhandari et al. 2020), in-flight micro-batches."""

from __future__ import annotations

import itertools

import pytest

from costmodel import ParallelPlan, TrainingSpec, estimate, get_cluster, load_model
from costmodel.layer.memory import (
    inflight_chunks,
    layer_activation_bytes,
    model_state_bytes,
    optimizer_bytes_per_param,
)
from costmodel.layer.params import model_shape

S, B = 2048, 1
GPT = model_shape(load_model("gpt3-175b"))
H, A = GPT.h, GPT.a


def act(tp=1, sp=0, rc=0):
    return layer_activation_bytes(GPT, B, S, tp=tp, sp=sp, recompute_code=rc, flash=False, act_bytes=2)


@pytest.mark.parametrize("t", [1, 2, 4, 8])
def test_korthikanti_table2(t):
    sbh = S * B * H
    assert act() == pytest.approx(sbh * (34 + 5 * A * S / H))                           # no parallelism
    assert act(tp=t) == pytest.approx(sbh * (10 + 24 / t + 5 * A * S / (H * t)))       # tensor parallel
    assert act(tp=t, sp=1) == pytest.approx(sbh / t * (34 + 5 * A * S / H))             # + sequence parallel
    assert act(tp=t, rc=1) == pytest.approx(sbh * (10 + 24 / t))                         # + selective
    assert act(tp=t, sp=1, rc=1) == pytest.approx(sbh * 34 / t)                          # + SP + selective
    assert act(tp=t, rc=2) == pytest.approx(2 * sbh)                                     # full recompute


def test_flash_attention_drops_the_s_squared_term():
    flash = layer_activation_bytes(GPT, B, S, tp=1, sp=0, recompute_code=0, flash=True, act_bytes=2)
    assert flash == pytest.approx(S * B * H * 34 + 4 * A * S * B)


def test_zero_bytes_per_parameter():
    assert optimizer_bytes_per_param("bf16", "adamw") == 12       # fp32 master + m + v
    assert optimizer_bytes_per_param("fp32", "adam") == 8
    n, dp = 1e9, 8
    totals = []
    for stage in range(4):
        w, g, o = model_state_bytes(n, zero_stage=stage, shards=dp, weight_bytes=2, grad_bytes=2,
                                    optimizer_bytes=12)
        totals.append(w + g + o)
    assert totals[0] == 16 * n                                     # 2 + 2 + 12 bytes/param (ZeRO paper)
    assert totals[1] == pytest.approx(4 * n + 12 * n / dp)
    assert totals[2] == pytest.approx(2 * n + 14 * n / dp)
    assert totals[3] == pytest.approx(16 * n / dp)


def test_inflight_micro_batches_per_schedule():
    p, m = 8, 32
    assert [inflight_chunks(1, r, p, m, 1) for r in range(p)] == list(range(p, 0, -1))    # 1F1B
    assert inflight_chunks(0, 0, p, m, 1) == m                                             # GPipe
    assert [inflight_chunks(3, r, p, m, 1) for r in range(p)] == [p] * p                   # ZB-H1
    v = 4
    chunks = inflight_chunks(2, 0, p, m, v)                                                # interleaved
    # Korthikanti 2022 sec. 4.2.3: the first stage stores L/p * (1 + (p-1)/(p*v)) layers' worth
    assert chunks / v == pytest.approx(p * (1 + (p - 1) / (p * v)))


def test_zero_stage_never_uses_more_memory_over_a_grid():
    model = load_model("llama2-13b")
    cluster = get_cluster("dgx-h100", nodes=4)
    training = TrainingSpec(global_batch_size=256, seq_len=4096)
    for dp, tp, pp, rc in itertools.product([4, 8], [1, 4], [1, 2], ["none", "full"]):
        if dp * tp * pp > cluster.num_gpus:
            continue
        peaks = [estimate(model, cluster, training, ParallelPlan(dp=dp, tp=tp, pp=pp, zero_stage=z,
                                                                 recompute=rc)).memory.peak_bytes
                 for z in range(4)]
        assert all(b <= a + 1e-6 for a, b in zip(peaks, peaks[1:], strict=False)), (dp, tp, pp, rc, peaks)


def test_memory_parts_sum_and_first_stage_holds_most_activations():
    est = estimate(load_model("gpt3-175b"), get_cluster("dgx-a100", nodes=128),
                   TrainingSpec(global_batch_size=1536, seq_len=2048),
                   ParallelPlan(dp=8, tp=8, pp=16, recompute="full"))
    for mem in (est.memory, *est.stage_memory):
        parts = (mem.parameters_bytes + mem.gradients_bytes + mem.optimizer_bytes + mem.activations_bytes
                 + mem.buffers_bytes)
        assert parts == pytest.approx(mem.peak_bytes, rel=1e-12)
    assert len(est.stage_memory) == 16
    acts = [m.activations_bytes for m in est.stage_memory[:-1]]
    assert acts == sorted(acts, reverse=True)
    assert est.memory.peak_bytes == max(m.peak_bytes for m in est.stage_memory)


@pytest.mark.parametrize("schedule, v", [("1f1b", 1), ("gpipe", 1), ("zero-bubble", 1), ("interleaved-1f1b", 2),
                                         ("interleaved-1f1b", 5)])
def test_closed_form_stage_memory_equals_the_simulated_schedule(schedule, v):
    """The in-flight counts agree with costmodel.pipeline.sim's per-rank peaks for every schedule."""
    model = load_model("gpt3-13b")
    cluster = get_cluster("dgx-a100", nodes=4)
    training = TrainingSpec(global_batch_size=64, seq_len=2048)
    plan = ParallelPlan(dp=2, tp=4, pp=4, schedule=schedule, virtual_stages=v, recompute="selective",
                        zero_stage=3 if v == 5 else 1, sequence_parallel=schedule == "gpipe")
    closed = estimate(model, cluster, training, plan)
    simulated = estimate(model, cluster, training, plan, timeline=True)
    for a, b in zip(closed.stage_memory, simulated.stage_memory, strict=True):
        assert a.activations_bytes == pytest.approx(b.activations_bytes, rel=1e-9)
        assert a.peak_bytes == pytest.approx(b.peak_bytes, rel=1e-9)
    assert closed.step_time_s == pytest.approx(simulated.step_time_s, rel=0.03)


def test_inflight_agrees_with_the_pipeline_closed_forms():
    """Rank 0's in-flight count equals costmodel.pipeline's uniform_peak_in_flight on a grid."""
    from costmodel.layer.memory import SCHEDULE_CODES
    from costmodel.pipeline import uniform_peak_in_flight

    for schedule, code in SCHEDULE_CODES.items():
        for pp, m in itertools.product([2, 4, 8], [4, 8, 16, 64]):
            for v in ([2, 3, 4] if schedule == "interleaved-1f1b" else [1]):
                assert inflight_chunks(code, 0, pp, m, v) == uniform_peak_in_flight(schedule, pp, m, v)
