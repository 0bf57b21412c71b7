"""T5 in the executor (executor/t5.py, span_corruption.py): shape and parameters as the cost model
counts them, relative position buckets, bidirectional encoder and causal decoder, pipeline chunks that
chain to the full model, and T5's span-corruption objective. Parity over plans: test_executor_parity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from costmodel import load_model
from costmodel.layer.params import total_params
from costmodel.specs import ParallelPlan, TrainingSpec
from costmodel.step.costs import _cross_layers_on_rank
from executor.data import global_batch, load_corpus
from executor.families import build_model
from executor.init import init_weights
from executor.model import IGNORE_INDEX
from executor.parity import synthetic_batch
from executor.pipeline import split_model
from executor.span_corruption import (
    EOS_ID,
    PAD_ID,
    check_vocab,
    noise_mask,
    raw_length,
    target_length,
    to_text,
)
from executor.t5 import T5, relative_position_bucket

SPEC = load_model("tiny-t5")
TRAIN = TrainingSpec(global_batch_size=4, seq_len=16, dtype="fp32")


def _real(spec=SPEC, seed: int = 0) -> torch.nn.Module:
    model = build_model(spec, device="meta")
    model.to_empty(device="cpu")
    init_weights(model, spec, seed=seed)
    return model


@pytest.mark.parametrize("name", ["tiny-t5", "t5-base", "t5-11b"])
def test_parameter_count_matches_costmodel(name):
    spec = load_model(name)
    model = build_model(spec, device="meta")
    assert isinstance(model, T5) and len(model.layers) == spec.total_layers
    assert sum(p.numel() for p in model.parameters()) == total_params(spec)


def test_forward_shape_and_initial_loss_near_uniform():
    tokens, targets = synthetic_batch(SPEC, TRAIN, step=0)
    assert tokens.shape == (4, 32) and targets.shape == (4, 16)
    logits = _real()(tokens)
    assert logits.shape == (4, 16, SPEC.vocab_size)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    assert abs(loss.item() - torch.log(torch.tensor(SPEC.vocab_size)).item()) < 0.3


def test_relative_buckets_are_exact_near_and_logarithmic_far():
    offset = torch.arange(-300, 301)
    bi = relative_position_bucket(offset, bidirectional=True)
    causal = relative_position_bucket(offset, bidirectional=False)
    assert bi.min() == 0 and bi.max() == 31 and causal.max() == 31
    # bidirectional: keys before the query in buckets 0-15, after it in 16-31; offsets < 8 exact
    assert bi[300 - 5] == 5 and bi[300 + 5] == 16 + 5 and bi[300] == 0
    assert causal[300 + 5] == 0 and causal[300 - 20] > causal[300 - 10] > causal[300 - 7] == 7
    assert causal[300 - 128] == causal[300 - 300] == 31  # beyond max_distance: the last bucket
    far = causal[: 300 - 8].flip(0)  # distances 9..300 grow into ever wider buckets
    assert bool((far[1:] >= far[:-1]).all())


def test_encoder_is_bidirectional_decoder_causal_and_reads_the_encoder():
    model = _real()
    tokens, _ = synthetic_batch(SPEC, TRAIN, step=0)
    s = TRAIN.seq_len
    with torch.no_grad():
        base = model(tokens)
        dec = tokens.clone()
        dec[:, s + 10] = (dec[:, s + 10] + 1) % 256
        diff = (model(dec) - base).abs().amax(dim=-1)
        assert diff[:, :10].max() == 0 and diff[:, 10:].max() > 0  # causal decoder
        enc = tokens.clone()
        enc[:, s - 1] = (enc[:, s - 1] + 1) % 256  # the encoder's last position
        assert (model(enc) - base).abs().amax(dim=-1)[:, 0].min() > 0  # reaches the first decoder position


@pytest.mark.parametrize("split", [(1, 1, 1, 1), (3, 0, 0, 1), (1, 3, 0, 0)])
def test_pipeline_chunks_chain_to_the_full_model(split):
    plan = ParallelPlan(pp=2, virtual_stages=2, schedule="interleaved-1f1b", layers_per_stage=split)
    full = _real()
    chunks = {}
    for rank in range(2):
        for s, part in split_model(build_model(SPEC), plan, pp_rank=rank):
            part.to_empty(device="cpu")
            init_weights(part, SPEC, seed=0)
            chunks[s] = part
    tokens, _ = synthetic_batch(SPEC, TRAIN, step=1)
    h = (tokens,)
    with torch.no_grad():
        for s in range(4):
            out = chunks[s](*h)
            h = out if isinstance(out, tuple) else (out,)
            if s < 3:  # (enc, dec, [enc_table], dec_table); the encoder table only while encoder blocks remain
                later_encoder = sum(split[: s + 1]) < SPEC.num_layers
                assert len(h) == 3 + later_encoder and h[-1].shape == (32, SPEC.num_heads)
        torch.testing.assert_close(h[0], full(tokens))
    # the encoder's final norm travels with the encoder's last block
    assert chunks[0 if split[0] >= 2 else 1].layers[str(SPEC.num_layers - 1)].final_norm is not None


def test_layer_split_matches_the_cost_model():
    """Decoder blocks per pipeline rank, as the cost model prices them (`_cross_layers_on_rank`)."""
    spec = load_model("t5-base").model_copy(update={"tie_embeddings": False})  # 12 + 12 blocks
    for pp, v in ((2, 1), (4, 1), (3, 2), (8, 1)):
        plan = ParallelPlan(pp=pp, virtual_stages=v, schedule="interleaved-1f1b" if v > 1 else "1f1b")
        for rank in range(pp):
            blocks = [int(k) for _, part in split_model(build_model(spec), plan, pp_rank=rank) for k in part.layers]
            decoder = sum(b >= spec.num_layers for b in blocks)
            assert decoder == _cross_layers_on_rank(rank, pp, v, spec.num_layers, spec.total_layers)


def test_span_corruption_lengths_follow_t5():
    # Raffel et al. 2020 sec 3.1.4 / T5's random_spans_helper: 568 raw tokens -> 512 inputs, 114 targets
    assert raw_length(512) == 568 and target_length(512) == 114
    for s in (16, 64, 100):
        assert target_length(s) < s


def test_span_corruption_hides_spans_behind_sentinels_and_targets_restore_them():
    corpus = load_corpus()
    s, vocab = 64, SPEC.vocab_size
    tokens, targets = global_batch(corpus, step=3, seed=0, global_batch_size=8, seq_len=s, arch="encoder-decoder",
                                   vocab_size=vocab)
    assert tokens.shape == (8, 2 * s) and targets.shape == (8, s)
    again = global_batch(corpus, step=3, seed=0, global_batch_size=8, seq_len=s, arch="encoder-decoder",
                         vocab_size=vocab)
    assert torch.equal(tokens, again[0]) and torch.equal(targets, again[1])
    t = target_length(s)
    for row in range(8):
        enc, dec, tgt = tokens[row, :s].tolist(), tokens[row, s:].tolist(), targets[row].tolist()
        assert tgt[t - 1] == EOS_ID and all(x == IGNORE_INDEX for x in tgt[t:])
        assert dec[0] == PAD_ID and dec[1:t] == tgt[: t - 1]  # teacher forcing: targets shifted right
        # undo the corruption: each sentinel in the input takes the span after it in the target
        spans, cur = {}, None
        for x in tgt[: t - 1]:
            if x > EOS_ID:
                cur = spans.setdefault(x, [])
            else:
                cur.append(x)
        restored = [b for x in enc[: enc.index(EOS_ID)] for b in (spans[x] if x > EOS_ID else [x])]
        window = bytes(restored).decode()
        assert window in corpus_text() and len(restored) == raw_length(s)


def corpus_text() -> str:
    return bytes(load_corpus().tolist()).decode()


def test_noise_is_15_percent_in_spans_of_mean_3():
    mask = noise_mask(200, raw_length(512), torch.Generator().manual_seed(0))
    assert abs(mask.float().mean().item() - 0.15) < 0.005
    starts = (mask[:, 1:] & ~mask[:, :-1]).sum(dim=1)
    assert (starts == 28).all() and not mask[:, 0].any()  # 85 noise tokens in 28 spans, non-noise first
    assert abs(mask.sum(dim=1).float().mean().item() / 28 - 3.0) < 0.1


def test_sentinels_need_room_in_the_vocabulary():
    check_vocab(384, 64)
    with pytest.raises(ValueError, match="vocab_size"):
        check_vocab(256 + 2, 64)
    with pytest.raises(ValueError, match="seq_len"):
        raw_length(3)


def test_text_of_targets_names_sentinels_like_t5():
    vocab = SPEC.vocab_size
    ids = [vocab - 1, *b"the cat", vocab - 2, *b"sat", EOS_ID, PAD_ID, 65]
    assert to_text(ids, vocab_size=vocab) == "<extra_id_0> the cat <extra_id_1> sat"
    assert to_text(ids, vocab_size=vocab, sentinels=False) == "the cat sat"  # what BLEU/ROUGE compare
    assert to_text(torch.tensor([*b"ab", PAD_ID, *b"c"]), vocab_size=vocab) == "abc"  # PAD dropped
