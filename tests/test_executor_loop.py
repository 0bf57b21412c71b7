"""Training-loop pieces: LR schedule, deterministic data, FLOPs/MFU, metrics and summary files."""

from __future__ import annotations

import json
import math

import pytest
import torch

from costmodel import ParallelPlan, StepMeasurement, TrainingSpec, load_model
from executor.data import (
    IGNORE_INDEX,
    MASK_ID,
    BatchSource,
    decode,
    encode,
    generate_corpus,
    global_batch,
    load_corpus,
    rank_rows,
    split_corpus,
)
from executor.metrics import (
    MemoryTracker,
    MetricsWriter,
    device_gpu_spec,
    matmul_params,
    model_flops_per_step,
    read_metrics,
    summarize,
    write_json_atomic,
)
from executor.train import lr_at


def test_lr_schedule_warms_up_then_decays_to_min():
    lrs = [lr_at(s, lr=1.0, warmup_steps=4, decay_steps=20) for s in range(1, 31)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    decay = lrs[3:20]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))  # strictly decreasing cosine
    assert lrs[19] == pytest.approx(0.1) and lrs[29] == pytest.approx(0.1)  # min_lr, flat after
    mid = lr_at(12, lr=1.0, warmup_steps=4, decay_steps=20)  # halfway through the cosine
    assert mid == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))


def test_lr_schedule_without_warmup_starts_at_peak():
    assert lr_at(1, lr=3e-4, warmup_steps=0, decay_steps=10) < 3e-4
    assert lr_at(0, lr=3e-4, warmup_steps=0, decay_steps=10) == pytest.approx(3e-4)


def test_corpus_is_deterministic_text_of_a_few_hundred_kb():
    text = generate_corpus()
    assert text == generate_corpus()
    assert 250_000 <= len(text.encode()) <= 400_000
    assert "\x00" not in text  # MASK_ID is free
    corpus = load_corpus()
    assert corpus.dtype == torch.int64 and int(corpus.max()) < 256
    assert decode(encode("héllo")) == "héllo"


def test_load_corpus_from_file_and_errors(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abc" * 100)
    assert load_corpus(path).numel() == 300
    with pytest.raises(ValueError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="seq-len"):
        load_corpus(path, min_tokens=1000)


def test_decoder_batch_is_next_byte_and_a_function_of_seed_and_step():
    corpus = load_corpus()
    x, y = global_batch(corpus, step=3, seed=7, global_batch_size=4, seq_len=16)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = global_batch(corpus, step=3, seed=7, global_batch_size=4, seq_len=16)
    x3, _ = global_batch(corpus, step=4, seed=7, global_batch_size=4, seq_len=16)
    x4, _ = global_batch(corpus, step=3, seed=8, global_batch_size=4, seq_len=16)
    assert torch.equal(x, x2) and not torch.equal(x, x3) and not torch.equal(x, x4)


def test_dp_ranks_take_contiguous_slices_of_the_same_global_batch():
    corpus = load_corpus()
    x, y = global_batch(split_corpus(corpus)[0], step=1, seed=0, global_batch_size=8, seq_len=8)
    parts = [BatchSource(corpus, seed=0, global_batch_size=8, seq_len=8, dp_rank=r, dp_size=4).batch(1)
             for r in range(4)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    with pytest.raises(ValueError, match="divisible"):
        rank_rows(x, dp_rank=0, dp_size=3)


def test_encoder_batch_is_masked_lm():
    corpus = load_corpus()
    x, y = global_batch(corpus, step=1, seed=0, global_batch_size=16, seq_len=64, arch="encoder")
    masked = y != IGNORE_INDEX
    assert masked.any(dim=1).all()  # every row has a prediction to make
    share = masked.float().mean().item()
    assert 0.10 < share < 0.25
    assert (x[masked] == MASK_ID).float().mean().item() > 0.6  # most chosen positions show MASK
    assert torch.equal(x[~masked], global_batch(corpus, step=1, seed=0, global_batch_size=16, seq_len=64)[0][~masked])


def test_flops_follow_the_cost_model_and_palm_formula():
    model = load_model("tiny-llama")
    training = TrainingSpec(global_batch_size=8, seq_len=64)
    tokens = 8 * 64
    palm = (6 * matmul_params(model) + 12 * 4 * 4 * 16 * 64) * tokens  # Chowdhery et al. 2022, app. B
    assert model_flops_per_step(model, training) == pytest.approx(palm, rel=1e-9)
    # doubling the batch doubles the FLOPs
    assert model_flops_per_step(model, TrainingSpec(global_batch_size=16, seq_len=64)) == pytest.approx(2 * palm)


def test_cpu_device_spec_comes_from_the_catalog():
    spec = device_gpu_spec(torch.device("cpu"))
    assert spec is not None and spec.name == "cpu" and spec.peak_flops("fp32") > 0


def test_memory_tracker_sees_a_big_allocation():
    tracker = MemoryTracker(torch.device("cpu"))
    tracker.start()
    block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    assert tracker.peak_bytes() >= 32 * 1024 * 1024
    del block


def test_metrics_writer_truncates_rerun_steps_and_skips_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    for step in range(1, 6):
        writer.write({"step": step, "loss": 1.0 / step})
    writer.close()
    with open(path, "a") as f:
        f.write('{"step": 6, "lo')  # a run killed mid-line
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    writer = MetricsWriter(path, resume_step=3)  # resumed from the step-3 checkpoint
    writer.write({"step": 4, "loss": 0.0})
    writer.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]


def test_summary_is_a_step_measurement_with_median_after_warmup(tmp_path):
    records = [{"step": i, "step_time_s": t, "loss": 9.0 - i} for i, t in enumerate([5.0, 1.0, 2.0, 3.0], start=1)]
    training = TrainingSpec(global_batch_size=4, seq_len=32, dtype="fp32")
    m = summarize(records, plan=ParallelPlan(dp=2), model_name="tiny-llama", device_name="cpu", backend="gloo",
                  world_size=2, training=training, flops_per_step=4e12, peak_flops_per_s=1e12, peak_bytes=123.0)
    assert m.step_time_s == 2.0  # median of 1, 2, 3: the 5 s warm-up step is excluded
    assert m.tokens_per_s == pytest.approx(4 * 32 / 2.0)
    assert m.achieved_tflops_per_gpu == pytest.approx(1.0) and m.mfu == pytest.approx(1.0)
    assert m.losses == (8.0, 7.0, 6.0, 5.0) and m.step_times_s == (5.0, 1.0, 2.0, 3.0)  # every step listed
    resumed = summarize(records[2:], plan=ParallelPlan(dp=2), model_name="tiny-llama", device_name="cpu",
                        backend="gloo", world_size=2, training=training, flops_per_step=4e12,
                        peak_flops_per_s=1e12, peak_bytes=1.0, history=records)
    assert resumed.steps == 4 and resumed.losses == m.losses  # the run's steps before the resume count
    assert resumed.step_time_s == 3.0  # timed over this attempt's steps after its warm-up step
    write_json_atomic(tmp_path / "summary.json", m.model_dump(mode="json"))
    again = StepMeasurement.model_validate(json.loads((tmp_path / "summary.json").read_text()))
    assert again == m


def test_tensor_bytes_tracker_counts_live_storage_once_and_frees_it():
    import torch

    from executor.memtrack import TensorBytesTracker

    lin = torch.nn.Linear(256, 512)
    param_bytes = (256 * 512 + 512) * 4
    with TensorBytesTracker(seed=lin.parameters()) as tr:
        assert tr.current_bytes == param_bytes
        x = torch.randn(64, 256)
        y = lin(x)
        view = y[:10]  # a view shares y's storage: not counted twice
        act_bytes = 64 * 512 * 4
        assert tr.current_bytes == param_bytes + 64 * 256 * 4 + act_bytes
        y.sum().backward()
        del y, view
        after = tr.current_bytes
    # grads of weight and bias live on; the activation was freed; the peak saw everything at once
    assert after == param_bytes * 2 + 64 * 256 * 4
    assert tr.peak_bytes >= param_bytes + 64 * 256 * 4 + act_bytes
