"""Parallel layers against their plain single-process equivalents (picotron's layer tests): the TP/SP
model's logits and every parameter's gradient, and FSDP2's gradients, equal the plain model's.

Two processes on Gloo (torch.multiprocessing); the plain model runs inside each process."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import loss_parallel

from costmodel import load_model
from costmodel.specs import ParallelPlan
from executor.grads import align_grads_, global_grad_norm
from executor.init import canonical_name, init_weights
from executor.model import build_model
from executor.parallelize import apply_fsdp, apply_recompute, apply_tp

MODELS = ("tiny-gpt", "tiny-llama", "tiny-bert")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plain(spec):
    model = build_model(spec, device="meta")
    model.to_empty(device="cpu")
    init_weights(model, spec, seed=3)
    return model


def _loss(logits: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).view_as(logits)
    return (logits * weights).sum()


def _grads(model) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        out[canonical_name(name)] = g
    return out


def _compare(parallel, plain, tokens, what: str) -> None:
    logits = parallel(tokens)
    ref = plain(tokens)
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what} logits: {m}")
    _loss(logits).backward()
    _loss(ref).backward()
    _assert_grads_close(_grads(parallel), _grads(plain), what)
    plain.zero_grad()


def _assert_grads_close(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), what
    scale = max(g.abs().max().item() for g in want.values())
    for name in want:  # fp32 sums in another order: error relative to the gradients' scale
        err = (got[name] - want[name]).abs().max().item()
        assert err <= 1e-5 * max(want[name].abs().max().item(), 1e-3 * scale), \
            f"{what} grad {name}: max abs error {err}"


def _check_aligned_norm(model, what: str, *, partial: bool) -> None:
    """align_grads_ reduces pending (Partial) gradients in one all-reduce and keeps their values; the
    global norm from local shards equals the norm of the full gradients."""
    before = _grads(model)
    issued = align_grads_(model.parameters())
    assert issued == (1 if partial else 0), f"{what}: {issued} all-reduces"
    for p in model.parameters():
        if isinstance(p, DTensor):
            assert p.grad.placements == p.placements, what
    _assert_grads_close(_grads(model), before, what)
    want = torch.sqrt(sum(g.double().square().sum() for g in before.values())).item()
    assert global_grad_norm(model.parameters()) == pytest.approx(want, rel=1e-6), what


def _check_loss_parallel(spec, plain, tokens, mesh) -> None:
    """Vocab-sharded logits + torch's loss_parallel cross-entropy == plain cross-entropy (value, grads)."""
    model = build_model(spec, device="meta")
    apply_tp(model, mesh, sequence_parallel=True, loss_parallel=True)
    model.to_empty(device="cpu")
    init_weights(model, spec, seed=3)
    targets = torch.roll(tokens, -1, dims=1)
    with loss_parallel():
        logits = model(tokens)
        assert isinstance(logits, DTensor) and logits.to_local().shape[-1] == spec.vocab_size // mesh.size()
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        loss.backward()
    ref = F.cross_entropy(plain(tokens).flatten(0, 1), targets.flatten(), reduction="sum")
    ref.backward()
    assert abs(loss.full_tensor().item() - ref.item()) <= 1e-5 * abs(ref.item())
    _assert_grads_close(_grads(model), _grads(plain), f"{spec.name} loss_parallel")
    plain.zero_grad()


def _worker(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tp",))
        for name in MODELS:
            spec = load_model(name)
            plain = _plain(spec)
            tokens = torch.randint(0, spec.vocab_size, (2, 16), generator=torch.Generator().manual_seed(7))
            for sp in (False, True):
                model = build_model(spec, device="meta")
                apply_tp(model, mesh, sequence_parallel=sp)
                if sp:
                    apply_recompute(model, "selective")
                model.to_empty(device="cpu")
                init_weights(model, spec, seed=3)
                wq = model.layers["0"].attention.wq.weight
                assert isinstance(wq, DTensor) and wq.to_local().shape[0] == wq.shape[0] // world
                _compare(model, plain, tokens, f"{name} tp{world} sp={sp}")
                _check_aligned_norm(model, f"{name} tp{world} sp={sp}", partial=sp)
            _check_loss_parallel(spec, plain, tokens, mesh)
            fsdp_mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("dp",))
            model = build_model(spec, device="meta")
            apply_fsdp(model, ParallelPlan(dp=world, zero_stage=3), fsdp_mesh)
            model.to_empty(device="cpu")
            init_weights(model, spec, seed=3)
            _compare(model, plain, tokens, f"{name} fsdp{world}")  # same rows on every rank: mean = plain
            _check_aligned_norm(model, f"{name} fsdp{world}", partial=False)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.xdist_group("dist")
def test_tp_sp_and_fsdp_layers_match_plain_model():
    mp.spawn(_worker, args=(2, _free_port()), nprocs=2, join=True)
