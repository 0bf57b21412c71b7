"""The mixture-of-experts layer (executor.moe) and expert parallelism: the layer against a per-token
loop, the auxiliary loss, and every EP plan's losses and gradient norms against the single-process run.

Context parallelism with experts (cp alone, and ep x cp x dp) is in the same cases. Plans run with the
parity harness (`executor.parity`, tests/test_executor_parity.py's launcher), 5 steps
of tiny-moe (4 experts, top-2, a shared expert, one dense first layer, auxiliary loss 0.01). The
gradient norm before clipping is compared too: AdamW's updates are invariant to a constant factor on
one parameter's gradient (e.g. the experts' 1/ep), which the losses alone would not show."""

from __future__ import annotations

from functools import cache

import pytest
import torch
import torch.nn.functional as F
from test_executor_parity import ROOT, _launch  # noqa: F401  (the harness's torchrun launcher)

from costmodel import load_model
from costmodel.specs import ParallelPlan, TrainingSpec
from executor.expert_parallel import check_expert_plan
from executor.init import init_weights
from executor.launch import plan_unsupported
from executor.model import build_model
from executor.moe import MoE, _sequence_aux_loss
from executor.parity import run_losses

STEPS = 5
RTOL = 1e-5
TRAINING = {"global_batch_size": 4, "seq_len": 16, "dtype": "fp32"}


def _case(name: str, **plan: object) -> dict:
    return {"name": name, "model": "tiny-moe", "plan": plan, "training": TRAINING, "steps": STEPS, "lr": 1e-3,
            "grad_norms": True}


CASES_2 = [_case("dp2-ep2", dp=2, ep=2), _case("dp2-ep2-zero3-full", dp=2, ep=2, zero_stage=3, recompute="full"),
           _case("cp2", cp=2)]   # the balance loss counts each sequence over the cp ranks
CASES_4 = [
    _case("dp4-ep2", dp=4, ep=2, zero_stage=1),
    _case("dp2-ep2-tp2-sp", dp=2, ep=2, tp=2, sequence_parallel=True),
    _case("dp2-ep2-pp2", dp=2, ep=2, pp=2),
    # experts over ep within dp, their replicas edp x cp; the dense weights' dp x cp
    _case("dp2-ep2-cp2-zero3", dp=2, ep=2, cp=2, zero_stage=3),
]


@cache
def _reference() -> tuple[tuple[float, ...], tuple[float, ...]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        norms: list[float] = []
        losses = run_losses(load_model("tiny-moe"), ParallelPlan(), TrainingSpec(**TRAINING), steps=STEPS, lr=1e-3,
                            grad_norms=norms)
        return tuple(losses), tuple(norms)
    finally:
        torch.set_num_threads(threads)


def _check(results: dict, cases: list[dict]) -> None:
    ref_losses, ref_norms = _reference()
    failures = []
    for case in cases:
        got = results[case["name"]]
        assert "error" not in got, got
        for key, ref in (("losses", ref_losses), ("grad_norms", ref_norms)):
            rel = max(abs(a - b) / abs(b) for a, b in zip(got[key], ref, strict=True))
            if rel > RTOL:
                failures.append(f"{case['name']} {key}: max rel diff {rel:.2e}\n  got {got[key]}\n  ref {list(ref)}")
    assert not failures, "\n".join(failures)


def test_moe_layer_equals_a_per_token_loop():
    spec = load_model("tiny-moe")
    model = build_model(spec, device="cpu")
    init_weights(model, spec, seed=0)
    assert [isinstance(b.feed_forward, MoE) for b in model.layers.values()] == list(spec.moe_layers)
    moe = model.layers["1"].feed_forward
    x = torch.randn(2, 8, spec.hidden_size, generator=torch.Generator().manual_seed(0))
    out = moe(x).reshape(-1, spec.hidden_size)
    flat = x.reshape(-1, spec.hidden_size)
    probs = torch.softmax(moe.router(flat), dim=-1)
    top_p, top_i = probs.topk(spec.experts_per_token, dim=-1)
    ref = moe.shared(flat)
    w1, w3, w2 = (getattr(moe.experts, n).weight for n in ("w1", "w3", "w2"))
    for t in range(flat.shape[0]):
        for j in range(spec.experts_per_token):
            e = int(top_i[t, j])
            hidden = F.silu(w1[e] @ flat[t]) * (w3[e] @ flat[t])
            ref[t] = ref[t] + top_p[t, j] / top_p[t].sum() * (w2[e] @ hidden)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_auxiliary_loss_is_per_sequence_and_reaches_the_router():
    probs = torch.softmax(torch.randn(3, 5, 4), dim=-1)
    top_i = probs.topk(2, dim=-1).indices
    whole = _sequence_aux_loss(probs, top_i, 4)
    parts = sum(_sequence_aux_loss(probs[i:i + 1], top_i[i:i + 1], 4) for i in range(3))
    torch.testing.assert_close(whole, parts)   # additive over sequences: the same on every plan
    uniform = _sequence_aux_loss(torch.full((1, 4, 4), 0.25), torch.tensor([[[0, 1], [2, 3], [0, 1], [2, 3]]]), 4)
    assert float(uniform) == pytest.approx(1.0)   # E * sum f_i P_i = 1 when perfectly balanced
    spec = load_model("tiny-moe")
    model = build_model(spec, device="cpu")
    init_weights(model, spec, seed=0)
    moe = model.layers["1"].feed_forward
    x = torch.randn(2, 8, spec.hidden_size)
    grads = []
    for scale in (0.0, 1.0):
        moe.zero_grad()
        moe.aux_loss_scale = scale
        moe(x).sum().backward()
        grads.append(moe.router.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_plans_the_executor_cannot_run_are_named():
    with pytest.raises(ValueError, match="ep: the executor splits experts over data-parallel ranks only"):
        check_expert_plan(ParallelPlan(dp=2, cp=2, ep=4))   # EP folded over CP: priced, not run
    assert "recompute: 'selective'" in plan_unsupported(ParallelPlan(dp=2, ep=2, recompute="selective"),
                                                       global_batch=8)
    assert plan_unsupported(ParallelPlan(dp=2, ep=2), global_batch=8) is None
    with pytest.raises(ValueError, match="capacity_factor: the executor runs dropless"):
        build_model(load_model("tiny-moe").model_copy(update={"capacity_factor": 1.25}))


def test_reference_losses_move():
    losses, norms = _reference()
    assert len(set(losses)) == STEPS and all(n > 1.0 for n in norms)   # clipping active: norms matter


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.xdist_group("dist")
def test_two_process_expert_parallel_plans_match_single_process(tmp_path):
    _check(_launch(CASES_2, 2, tmp_path, timeout_s=550), CASES_2)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.xdist_group("dist")
def test_four_process_expert_parallel_plans_match_single_process(tmp_path):
    _check(_launch(CASES_4, 4, tmp_path, timeout_s=550), CASES_4)
