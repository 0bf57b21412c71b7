"""Parameter counts against published sizes; FLOPs against Megatron's eq. 3 (Narayanan et al. 2021)."""

from __future__ import annotations

import pytest

from costmodel import load_model
from costmodel.layer.flops import (
    RECOMPUTE_CODES,
    layer_fwd_flops,
    lm_head_fwd_flops,
    megatron_eq3_flops,
    recompute_fwd_flops,
    step_flops,
)
from costmodel.layer.params import layer_params, model_shape, total_params


@pytest.mark.parametrize("name, published", [("gpt3-175b", 175.0e9), ("llama2-70b", 69.0e9),
                                              ("llama2-7b", 6.74e9), ("llama3-8b", 8.03e9),
                                              ("llama3-405b", 405.0e9), ("gpt3-125m", 125e6)])
def test_parameter_counts_match_published_within_1pct(name, published):
    assert total_params(load_model(name)) == pytest.approx(published, rel=0.01)


def test_gpt3_175b_block_is_12h2_plus_biases_and_norms():
    s = model_shape(load_model("gpt3-175b"))
    h = 12288
    assert layer_params(s) == 12 * h * h + 13 * h   # 4h^2 attn + 8h^2 MLP; biases 3h+h+4h+h; norms 4h


def test_gqa_and_swiglu_shapes():
    s = model_shape(load_model("llama2-70b"))
    h, kv_width, f = 8192, 8 * 128, 28672
    assert layer_params(s) == 2 * h * h + 2 * h * kv_width + 3 * h * f + 2 * h
    fwd = layer_fwd_flops(s, 1, 4096)
    tokens = 4096
    assert fwd == 2 * tokens * h * (2 * h + 2 * kv_width) + 4 * 4096 * 4096 * h + 6 * tokens * h * f


def test_encoder_decoder_counts_cross_attention():
    t5 = model_shape(load_model("t5-base"))
    assert layer_params(t5, cross=True) > layer_params(t5)
    assert layer_fwd_flops(t5, 2, 512, cross=True) > layer_fwd_flops(t5, 2, 512)
    assert total_params(load_model("t5-base")) == pytest.approx(222.9e6, rel=0.01)  # HF t5-base


@pytest.mark.parametrize("name, batch", [("gpt3-175b", 1536), ("megatron-gpt-1t", 3072),
                                         ("megatron-gpt-1.7b", 512)])
def test_full_recompute_hardware_flops_equal_megatron_eq3(name, batch):
    model = load_model(name)
    s = model_shape(model)
    seq = 2048
    _, hw = step_flops(s, batch, seq, RECOMPUTE_CODES["full"])
    assert hw == pytest.approx(megatron_eq3_flops(batch, seq, model.num_layers, model.hidden_size,
                                                  model.vocab_size), rel=1e-12)


def test_model_flops_are_three_forwards_and_recompute_adds_forward_work():
    s = model_shape(load_model("gpt3-13b"))
    b, seq = 8, 2048
    fwd = s.n_enc * layer_fwd_flops(s, b, seq) + lm_head_fwd_flops(s, b, seq)
    model_f, hw_none = step_flops(s, b, seq, 0)
    _, hw_sel = step_flops(s, b, seq, 1)
    _, hw_full = step_flops(s, b, seq, 2)
    assert model_f == hw_none == 3 * fwd
    assert hw_sel - hw_none == s.n_enc * 4 * b * seq * seq * s.h          # the attention core again
    assert hw_full - hw_none == s.n_enc * layer_fwd_flops(s, b, seq)
    assert recompute_fwd_flops(s, b, seq, 0) == 0
