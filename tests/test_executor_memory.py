"""The executor allocates no more than a plain torch loop of the same model: peak live tensor bytes of
one step (CPU, executor.memtrack) against executor.baseline's plain loop, what stays alive between
steps, and the optimizer pieces that keep temporaries small without changing a number."""

from __future__ import annotations

import copy

import pytest
import torch

from costmodel import load_model
from costmodel.specs import ParallelPlan, TrainingSpec
from executor.baseline import compare_tensor_bytes
from executor.init import init_weights
from executor.model import build_model
from executor.optim import adamw_kernel, local_bytes, split_groups


@pytest.mark.parametrize(("model", "seq_len", "mb", "recompute"), [
    ("tiny-llama", 16, 4, "none"),  # the optimizer step holds the peak: foreach temporaries showed here
    ("tiny-llama", 64, 2, "full"),
])
def test_executor_peak_is_the_plain_loops(model, seq_len, mb, recompute):
    r = compare_tensor_bytes(load_model(model), TrainingSpec(global_batch_size=4, seq_len=seq_len, dtype="fp32"),
                             ParallelPlan(micro_batch_size=mb, recompute=recompute))
    assert r["executor_peak_bytes"] <= 1.02 * r["plain_peak_bytes"], r
    # between steps: parameters and AdamW states only (a few bytes of loss scalars aside), no gradients
    assert abs(r["executor_after_bytes"] - r["plain_after_bytes"]) <= 64, r


def _params(sizes):
    return [torch.nn.Parameter(torch.randn(n)) for n in sizes]


def test_split_groups_bounds_bytes_and_keeps_order_and_options():
    decayed, plain = _params([10, 30, 5, 5, 40]), _params([3, 3])
    groups = [{"params": decayed, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}]
    out = split_groups(groups, max_bytes=40 * 4)
    assert [p for g in out for p in g["params"]] == decayed + plain
    assert all(sum(local_bytes(p) for p in g["params"]) <= 40 * 4 for g in out)
    assert [g["weight_decay"] for g in out] == [0.1, 0.1, 0.1, 0.0]  # [10], [30, 5, 5], [40], [3, 3]


def test_chunked_foreach_adamw_changes_no_number():
    torch.manual_seed(0)
    a = _params([64, 256, 32, 128])
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    whole = torch.optim.AdamW([{"params": a}], lr=1e-2, foreach=True)
    chunked = torch.optim.AdamW(split_groups([{"params": b}], max_bytes=256 * 4), lr=1e-2, foreach=True)
    assert len(chunked.param_groups) == 3
    for step in range(3):
        grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(step * 10 + i)) for i, p in enumerate(a)]
        for ps, opt in ((a, whole), (b, chunked)):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g.clone()
            opt.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_adamw_kernel_is_fused_on_cuda_and_foreach_on_cpu():
    assert adamw_kernel(torch.device("cuda", 0)) == {"fused": True}
    assert adamw_kernel(torch.device("cpu")) == {"foreach": True}


def test_threaded_init_draws_the_same_weights():
    spec = load_model("tiny-llama")
    one = build_model(spec, device="meta")
    one.to_empty(device="cpu")
    many = copy.deepcopy(one)
    init_weights(one, spec, seed=3, threads=1)
    init_weights(many, spec, seed=3, threads=5)
    assert all(torch.equal(x, y) for x, y in zip(one.parameters(), many.parameters(), strict=True))
