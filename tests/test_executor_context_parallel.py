"""Context parallelism's pieces in one process: the load-balanced sequence split, the causal attention
of a rank's query chunks over the whole sequence's keys (values and gradients equal to the plain
model's), global positions, and the rules that refuse what cannot run (loss parity across processes:
tests/test_executor_parity.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from costmodel import ParallelPlan, load_model
from executor.context_parallel import (
    attend_chunks,
    check_cp,
    chunk_positions,
    shard_sequence,
    unshard_sequence,
)
from executor.init import init_weights
from executor.model import build_model


@pytest.mark.parametrize("cp", [1, 2, 4])
def test_each_rank_holds_chunks_i_and_2cp_minus_1_minus_i(cp):
    seq = 16
    positions = [chunk_positions(seq, cp, r) for r in range(cp)]
    assert sorted(torch.cat(positions).tolist()) == list(range(seq))   # every token once
    c = seq // (2 * cp)
    assert positions[0][:c].tolist() == list(range(c)) and positions[0][c:].tolist() == list(range(seq - c, seq))
    work = {int((p + 1).sum()) for p in positions}   # causal attention: a query at p reads p + 1 keys
    assert len(work) == 1   # the same work on every rank
    x = torch.arange(3 * seq).view(3, seq)
    shards = [shard_sequence(x, cp, r) for r in range(cp)]
    assert all(torch.equal(s[0], p) for s, p in zip(shards, positions, strict=True))
    assert torch.equal(unshard_sequence(torch.stack(shards), dim=2), x)


def test_a_sequence_the_chunks_do_not_divide_is_refused():
    with pytest.raises(ValueError, match=r"cp: seq_len=18 is not divisible by 2\*cp=4"):
        chunk_positions(18, 2, 0)
    with pytest.raises(ValueError, match="cp: seq_len=18"):
        check_cp(ParallelPlan(cp=2), device=torch.device("cpu"), seq_len=18)
    with pytest.raises(ValueError, match="cp_attention: 'ring'.*this device is cpu"):
        check_cp(ParallelPlan(cp=2, cp_attention="ring"), device=torch.device("cpu"), seq_len=16)


@pytest.mark.parametrize("cp", [1, 2, 4])
def test_query_chunks_over_gathered_keys_equal_causal_attention(cp):
    """Values: each rank's output rows are the full causal attention's rows at its positions. Gradients:
    the sum over ranks of each rank's key/value gradients (what the all-gather's reduce-scatter
    forms) and every rank's query gradients equal the full attention's."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8, generator=gen, requires_grad=True) for _ in range(3))
    w = torch.randn(2, 4, 16, 8, generator=gen)   # a fixed linear loss of the output
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    (full * w).sum().backward()
    want = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    for r in range(cp):
        out = attend_chunks(shard_sequence(q, cp, r, dim=2), k, v, cp=cp, rank=r)
        torch.testing.assert_close(out, shard_sequence(full, cp, r, dim=2), rtol=1e-5, atol=1e-6)
        (out * shard_sequence(w, cp, r, dim=2)).sum().backward()
    for got, ref in zip((q.grad, k.grad, v.grad), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt"])
def test_global_positions_reach_rotary_and_learned_embeddings(name):
    """`Transformer.positions` are the tokens' global positions: 0..s-1 is the plain model; spreading
    two tokens apart changes what the second sees (rotary: their distance; learned: both embeddings);
    shifting both by 5 changes nothing under rotary positions (relative) and the output under learned."""
    spec = load_model(name)
    model = build_model(spec, device="cpu")
    init_weights(model, spec, seed=0)
    tokens = torch.randint(0, spec.vocab_size, (2, 2), generator=torch.Generator().manual_seed(1))

    def at(*positions: int) -> torch.Tensor:
        model.positions = torch.tensor(positions)
        return model(tokens)

    model.positions = None
    plain = model(tokens)
    torch.testing.assert_close(at(0, 1), plain)
    assert not torch.allclose(at(0, 3)[:, 1], plain[:, 1])
    shifted_equal = torch.allclose(at(5, 8), at(0, 3), atol=1e-5)
    assert shifted_equal == (spec.position == "rope")
    with pytest.raises(ValueError, match="positions: the model holds 2 positions"):
        model(tokens[:, :1])
