"""Context parallelism's attention traffic for one block and one micro-batch, priced as the executor
runs it on the device (which variant that is: `costmodel.layer.cp_variant`).

The sequence is split into 2*cp chunks, rank i holding chunks i and 2cp-1-i, so each rank's share
of causal attention is equal (Llama Team 2024, "The Llama 3 Herd of Models", sec. 3.3.2):

- **all-gather** (any device; the executor's own autograd function): before attention the ranks
  all-gather the keys and values of their kv heads, each rank attends its two query chunks to the
  keys before them, and the backward reduce-scatters the gathered keys' and values' gradients
  (Llama 3, sec. 3.3.2). Both collectives block (nothing to overlap them with in the block); a
  recomputed forward (full or selective) gathers again.
- **ring** (CUDA; torch's `context_parallel` ring attention with its default all-gather rotater):
  the keys and values (after the GQA repeat: all query heads) are all-gathered while the local
  block computes, then each of the cp steps computes 1/cp of the core (load-balanced). The backward
  all-gathers them again behind its first step, and passes the fp32 key/value gradients around the
  ring (cp transfers, each hidden behind the next step's compute but the last; Liu et al. 2023,
  "Ring Attention with Blockwise Transformers")."""

from __future__ import annotations

from typing import Any

from .context import collective_s, vmax
from .cp_variant import CP_ATTENTION_CODES, auto_cp_variant

__all__ = ["cp_attention_s", "cp_ring", "cp_host_ops", "RING_GRAD_BYTES", "GATHER_HOST_OPS"]

Num = Any

RING_GRAD_BYTES = 4
"""torch's ring attention accumulates and passes the key/value gradients in fp32 (convert_to_f32)."""
GATHER_HOST_OPS = 2
"""Host ops (in `block_host_ops`' units) the all-gather variant adds to a block's forward: counted with a
dispatch mode on a small-llama block, its core issues 57 more aten calls per forward + backward
(stack, gather, reorder, two masks, two SDPA calls, cat) than plain SDPA; the block issues 235 for
the 3 x 9 op-passes the model counts, so 57 / 235 x 27 / 3 = 2.2 per pass."""


def cp_ring(ctx: Any, k: Any) -> Num:
    """1 where the block runs torch's ring attention (`k.cp_attn`, or 'auto' on the context's device),
    0 where it runs the all-gather variant."""
    auto_ring = int(auto_cp_variant(ctx.device) == "ring")
    return (k.cp_attn == CP_ATTENTION_CODES["ring"]) + (k.cp_attn == CP_ATTENTION_CODES["auto"]) * auto_ring


def cp_host_ops(ctx: Any, k: Any) -> Num:
    """Host ops context parallelism adds to a block's forward (`GATHER_HOST_OPS` for the all-gather
    variant; torch's ring attention on CUDA, where the host runs ahead of the GPU, is not counted)."""
    return (k.cp > 1) * (1 - cp_ring(ctx, k)) * GATHER_HOST_OPS


def cp_attention_s(ctx: Any, k: Any, comm: Any, *, core_f_s: Num, core_b_s: Num, blocks: int = 1) -> Num:
    """Exposed CP seconds of one block's forward + backward (+ recomputation) for micro-batch k.mb:
    the variant `k.cp_attn` selects (or `ctx.device`'s for 'auto'). `core_f_s` / `core_b_s`: the
    rank's attention core forward / backward seconds (its 2 chunks against the keys before them)."""
    sh, e, tp, cp, rc = ctx.shape, ctx.act_bytes, k.tp, k.cp, k.recompute
    tokens = k.mb * ctx.seq_len                       # a gathered buffer holds the whole sequence
    kv = blocks * 2 * e * tokens * sh.kv_width / tp
    gather = (collective_s(ctx, comm, "cp", "all_gather", kv) * (1 + (rc >= 1))
              + collective_s(ctx, comm, "cp", "reduce_scatter", kv))
    ring = cp_ring(ctx, k)
    if not (ring if isinstance(ring, (int, bool)) else ring.any()):
        return gather
    kv_rep = blocks * 2 * e * tokens * sh.q_width / tp
    ag = collective_s(ctx, comm, "cp", "all_gather", kv_rep)
    grads = blocks * 2 * RING_GRAD_BYTES * (tokens / cp) * sh.q_width / tp
    p2p = collective_s(ctx, comm, "cp", "send_recv", grads)
    step_f, step_b = core_f_s / cp, core_b_s / cp
    ring_s = (_exposed(ag, step_f) * (1 + (rc == 2)) + _exposed(ag, step_b)
              + (cp - 1) * _exposed(p2p, step_b) + p2p)
    return ring * ring_s + (1 - ring) * gather


def _exposed(comm_s: Num, compute_s: Num) -> Num:
    """What a transfer adds when it overlaps `compute_s` of compute: max(comm - compute, 0)."""
    return vmax(comm_s - compute_s, 0.0)

