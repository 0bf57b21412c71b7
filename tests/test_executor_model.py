"""Reference models (executor/model.py, init.py) and the single-process engine path: no process group."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from costmodel import load_model
from costmodel.layer.params import total_params
from costmodel.specs import ModelSpec, ParallelPlan, TrainingSpec
from executor.engine import build_engine
from executor.families import build_model as build_families_model
from executor.grads import clip_grad_norm_
from executor.init import canonical_name, init_weights
from executor.mesh import mesh_shape
from executor.model import IGNORE_INDEX, _apply_rope, build_model, rope_cache
from executor.parity import run_losses, synthetic_batch
from executor.pipeline import build_schedule, layer_ranges, split_model

TINY = ["tiny-gpt", "tiny-llama", "tiny-bert"]
TRAIN = TrainingSpec(global_batch_size=4, seq_len=16, dtype="fp32")


def _real(spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
    model = build_model(spec, device="meta")
    model.to_empty(device="cpu")
    init_weights(model, spec, seed=seed)
    return model


@pytest.mark.parametrize("name", TINY + ["small-llama", "gpt3-125m", "llama2-7b", "bert-base"])
def test_parameter_count_matches_costmodel(name):
    spec = load_model(name)
    model = build_model(spec, device="meta")
    assert sum(p.numel() for p in model.parameters()) == total_params(spec)


@pytest.mark.parametrize("name", TINY)
def test_forward_shape_and_initial_loss_near_uniform(name):
    spec = load_model(name)
    model = _real(spec)
    tokens, targets = synthetic_batch(spec, TRAIN, step=0)
    logits = model(tokens)
    assert logits.shape == (*tokens.shape, spec.vocab_size)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    assert abs(loss.item() - torch.log(torch.tensor(spec.vocab_size)).item()) < 0.3  # N(0, 0.02) init


def test_init_is_deterministic_per_name_and_seed():
    spec = load_model("tiny-llama")
    a, b, c = _real(spec, 0), _real(spec, 0), _real(spec, 1)
    for (na, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters(),
                                          strict=True):
        assert torch.equal(pa, pb), na
        if pa.ndim == 2:
            assert not torch.equal(pa, pc), na
    assert torch.equal(a.layers["0"].attention_norm.weight, torch.ones(spec.hidden_size))
    assert a.layers["3"].attention.wo.weight.std() < a.layers["3"].attention.wq.weight.std()


def test_canonical_name_strips_wrappers():
    assert canonical_name("module.layers.0._checkpoint_wrapped_module.attention.wq.weight") == \
        "layers.0.attention.wq.weight"


def test_tied_embeddings_survive_materialization():
    spec = load_model("gpt3-125m").model_copy(update={"num_layers": 1, "vocab_size": 512, "hidden_size": 64,
                                                      "num_heads": 4})
    model = _real(spec)
    assert model.output.weight is model.embed.tok.weight


def test_decoder_is_causal_encoder_is_bidirectional():
    for name, causal in (("tiny-llama", True), ("tiny-gpt", True), ("tiny-bert", False)):
        spec = load_model(name)
        model = _real(spec)
        tokens = torch.randint(0, spec.vocab_size, (1, 16))
        changed = tokens.clone()
        changed[0, 10] = (changed[0, 10] + 1) % spec.vocab_size
        with torch.no_grad():
            diff = (model(tokens) - model(changed)).abs().amax(dim=-1)[0]
        assert bool(diff[:10].max() == 0) is causal, name
        assert diff[10:].max() > 0


def test_rope_scores_depend_only_on_offset():
    spec = load_model("tiny-llama")
    rope = rope_cache(spec)
    q = torch.randn(1, 1, 1, spec.kv_channels).expand(1, 16, 1, -1)
    k = torch.randn(1, 1, 1, spec.kv_channels).expand(1, 16, 1, -1)
    qr, kr = _apply_rope(q, rope), _apply_rope(k, rope)
    s = (qr[0, :, 0] @ kr[0, :, 0].T)
    assert torch.allclose(s[5, 2], s[9, 6], atol=1e-5) and torch.allclose(s[3, 3], s[12, 12], atol=1e-5)


def test_gqa_matches_mha_with_repeated_kv_heads():
    gqa = load_model("tiny-llama")
    mha = gqa.model_copy(update={"num_kv_heads": None})
    a, b = _real(gqa), _real(mha)
    rep = gqa.num_heads // gqa.kv_heads
    d = gqa.kv_channels
    with torch.no_grad():
        b.load_state_dict({k: v for k, v in a.state_dict().items() if ".wk." not in k and ".wv." not in k},
                          strict=False)
        for key in a.layers:
            for w in ("wk", "wv"):
                src = getattr(a.layers[key].attention, w).weight.view(gqa.kv_heads, d, -1)
                getattr(b.layers[key].attention, w).weight.copy_(src.repeat_interleave(rep, 0).flatten(0, 1))
    tokens = torch.randint(0, gqa.vocab_size, (2, 16))
    torch.testing.assert_close(a(tokens), b(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_pipeline_chunks_chain_to_the_full_model(name):
    spec = load_model(name)
    plan = ParallelPlan(pp=2, virtual_stages=2, schedule="interleaved-1f1b", layers_per_stage=(1, 2, 0, 1))
    full = _real(spec)
    chunks = {}
    for rank in range(2):
        for s, part in split_model(build_model(spec), plan, pp_rank=rank):
            part.to_empty(device="cpu")
            init_weights(part, spec, seed=0)
            chunks[s] = part
    assert [list(chunks[s].layers.keys()) for s in range(4)] == [["0"], ["1", "2"], [], ["3"]]
    tokens = torch.randint(0, spec.vocab_size, (2, 16))
    h = tokens
    for s in range(4):
        h = chunks[s](h)
    torch.testing.assert_close(h, full(tokens))


def test_layer_ranges_reject_a_split_that_misses_layers():
    with pytest.raises(ValueError, match="layers_per_stage"):
        layer_ranges(ParallelPlan(pp=2, layers_per_stage=(1, 2)), 4)


@pytest.mark.parametrize("name", TINY)
def test_single_process_engine_memorizes_a_batch(name):
    spec = load_model(name)
    engine = build_engine(spec, ParallelPlan(micro_batch_size=2), TRAIN, device=torch.device("cpu"), lr=1e-2)
    tokens, targets = synthetic_batch(spec, TRAIN, step=0)
    losses = [engine.train_step(tokens, targets, lr=1e-2) for _ in range(15)]
    assert losses[-1] < 0.6 * losses[0], losses


def test_engine_loss_is_the_global_token_mean():
    spec = load_model("tiny-bert")
    engine = build_engine(spec, ParallelPlan(micro_batch_size=1), TRAIN, device=torch.device("cpu"))
    tokens, targets = synthetic_batch(spec, TRAIN, step=0)
    with torch.no_grad():
        logits = engine.model_parts[0](tokens)
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX).item()
    assert (targets == IGNORE_INDEX).float().mean() > 0.5  # masked LM: most positions carry no loss
    assert engine.train_step(tokens, targets, lr=0.0) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("recompute", ["full", "selective"])
def test_recompute_gives_the_same_losses(recompute):
    spec = load_model("tiny-gpt")
    ref = run_losses(spec, ParallelPlan(micro_batch_size=2), TRAIN, steps=3)
    got = run_losses(spec, ParallelPlan(micro_batch_size=2, recompute=recompute), TRAIN, steps=3)
    assert got == pytest.approx(ref, rel=1e-6)


def test_micro_batch_size_does_not_change_losses():
    spec = load_model("tiny-llama")
    ref = run_losses(spec, ParallelPlan(micro_batch_size=4), TRAIN, steps=3)
    assert run_losses(spec, ParallelPlan(micro_batch_size=1), TRAIN, steps=3) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize(("plan", "field"), [
    (ParallelPlan(cp=3), "cp"),                       # 3 does not divide the 16 tokens
    (ParallelPlan(cp=2, cp_attention="ring"), "cp_attention"),   # torch's ring attention needs CUDA
    (ParallelPlan(dp=2), "dp"),
    (ParallelPlan(tp=3), "tp"),
    (ParallelPlan(pp=8), "pp"),
])
def test_bad_plans_raise_value_errors_naming_the_field(plan, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        build_engine(load_model("tiny-llama"), plan, TRAIN, device=torch.device("cpu"))


def test_train_step_rejects_wrong_rows():
    spec = load_model("tiny-llama")
    engine = build_engine(spec, ParallelPlan(), TRAIN, device=torch.device("cpu"))
    tokens, targets = synthetic_batch(spec, TRAIN, step=0)
    with pytest.raises(ValueError, match="tokens"):
        engine.train_step(tokens[:2], targets[:2], lr=1e-3)


def test_unsupported_architectures_raise():
    with pytest.raises(ValueError, match="position"):  # relative biases: encoder-decoder (T5) only
        build_model(load_model("tiny-llama").model_copy(update={"position": "relative"}))
    with pytest.raises(ValueError, match="arch"):  # encoder-decoders: executor.families / executor.t5
        build_model(load_model("tiny-t5"))
    with pytest.raises(ValueError, match="position"):
        build_families_model(load_model("tiny-t5").model_copy(update={"position": "learned"}))


def test_mesh_follows_placement_innermost_last():
    assert mesh_shape(ParallelPlan(dp=2, tp=4, pp=3)) == (("pp", "dp", "cp", "tp"), (3, 2, 1, 4))
    plan = ParallelPlan(dp=2, tp=4, placement=("dp", "tp", "cp", "pp"))
    assert mesh_shape(plan) == (("pp", "cp", "tp", "dp"), (1, 1, 4, 2))


def test_1f1b_with_too_few_micro_batches_names_the_field():
    with pytest.raises(ValueError, match="^micro_batch_size"):
        build_schedule([], ParallelPlan(pp=4), n_microbatches=2, loss_fn=lambda out, tgt: out.sum())


def test_clip_matches_torch_clip_grad_norm():
    spec = load_model("tiny-gpt")
    a, b = _real(spec), _real(spec)
    tokens = torch.randint(0, spec.vocab_size, (2, 16))
    for m in (a, b):
        (m(tokens) ** 2).mean().backward()
    norm = clip_grad_norm_(list(a.parameters()), 0.05)
    ref = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.05)
    assert norm == pytest.approx(ref.item(), rel=1e-6) and norm > 0.05
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)
