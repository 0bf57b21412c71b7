"""Per-rank op order of each pipeline schedule (what a rank runs, in which order; no times).

An op is a tuple `(kind, stage, micro_batch, index)`: `kind` is `FWD`, `BWD` (the whole backward, or
its input-gradient part B under zero-bubble) or `WGT` (the weight-gradient part W); `stage` is the
virtual stage j (it lives on rank j % pp, chunk j // pp, as in Megatron's interleaving); `index` is
`stage * m + micro_batch`, the op's slot in flat per-op arrays.

Orders follow the published schedules and torch.distributed.pipelining's implementations of them:
- gpipe: all forwards, then all backwards (Huang et al. 2019, "GPipe").
- 1f1b: PipeDream-flush (Narayanan et al. 2021, "Memory-Efficient Pipeline-Parallel DNN Training"):
  rank r runs min(pp-r-1, m) warm-up forwards, then alternates one forward / one backward, then
  drains the remaining backwards.
- interleaved-1f1b: Narayanan et al. 2021 (SC21, sec. 2.2.2) as in Megatron-LM and torch's
  `ScheduleInterleaved1F1B`: groups of pp micro-batches per chunk, (v-1)*pp + 2*(pp-r-1) warm-up
  forwards, backwards visit chunks in reverse. Needs m % pp == 0. Unlike Megatron we keep this
  warm-up when m == pp (Megatron then runs all forwards first, a workaround for its blocking p2p,
  which this model does not have); with v = 1 it is 1F1B with a deeper warm-up (more memory).
- zero-bubble: ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", sec. 3.1) as in torch's
  `ScheduleInterleavedZeroBubble` with one chunk: 1F1B order of F and B, rank r delays each W by r
  micro-batches and runs the rest at the end, so W fills the cool-down bubble and rank r holds at
  most pp micro-batches (the peak of 1F1B).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["FWD", "BWD", "WGT", "SCHEDULES", "Op", "rank_orders", "rank_order_arrays", "check_schedule_args"]

FWD, BWD, WGT = 0, 1, 2
SCHEDULES = ("gpipe", "1f1b", "interleaved-1f1b", "zero-bubble")
Op = tuple[int, int, int, int]


def check_schedule_args(schedule: str, pp: int, num_micro_batches: int, virtual_stages: int) -> None:
    """Raise ValueError naming the field and the fix when the schedule cannot run these sizes."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
    for name, value in (("pp", pp), ("num_micro_batches", num_micro_batches),
                        ("virtual_stages", virtual_stages)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if virtual_stages > 1 and schedule != "interleaved-1f1b":
        raise ValueError(f"virtual_stages={virtual_stages} needs schedule='interleaved-1f1b' "
                         f"(got {schedule!r}); use virtual_stages=1")
    if schedule == "interleaved-1f1b" and num_micro_batches % pp:
        raise ValueError(f"num_micro_batches={num_micro_batches} must be a multiple of pp={pp} for "
                         "interleaved-1f1b; change the micro-batch count or use schedule='1f1b'")


def _op(kind: int, stage: int, mb: int, m: int) -> Op:
    return (kind, stage, mb, stage * m + mb)


def _gpipe(rank: int, m: int) -> list[Op]:
    return [_op(FWD, rank, i, m) for i in range(m)] + [_op(BWD, rank, i, m) for i in range(m)]


def _one_f_one_b(rank: int, pp: int, m: int, *, zero_bubble: bool) -> list[Op]:
    warmup = min(pp - rank - 1, m)
    ops = [_op(FWD, rank, i, m) for i in range(warmup)]
    w_next = 0
    for k in range(m):
        if warmup + k < m:
            ops.append(_op(FWD, rank, warmup + k, m))
        ops.append(_op(BWD, rank, k, m))
        if zero_bubble and k >= rank:          # W delayed by `rank` micro-batches (ZB-H1)
            ops.append(_op(WGT, rank, w_next, m))
            w_next += 1
    if zero_bubble:
        ops.extend(_op(WGT, rank, i, m) for i in range(w_next, m))
    return ops


def _interleaved(rank: int, pp: int, m: int, v: int) -> list[Op]:
    total = m * v
    warmup = min((v - 1) * pp + 2 * (pp - rank - 1), total)

    def fwd(k: int) -> Op:
        chunk = (k // pp) % v
        return _op(FWD, chunk * pp + rank, (k // (pp * v)) * pp + k % pp, m)

    def bwd(k: int) -> Op:
        chunk = v - 1 - (k // pp) % v
        return _op(BWD, chunk * pp + rank, (k // (pp * v)) * pp + k % pp, m)

    ops = [fwd(k) for k in range(warmup)]
    for k in range(total - warmup):
        ops.append(fwd(warmup + k))
        ops.append(bwd(k))
    ops.extend(bwd(k) for k in range(total - warmup, total))
    return ops


@lru_cache(maxsize=256)
def rank_orders(schedule: str, pp: int, num_micro_batches: int,
                virtual_stages: int = 1) -> tuple[tuple[Op, ...], ...]:
    """The op list of every rank, in the order the schedule runs them (cached; pure)."""
    check_schedule_args(schedule, pp, num_micro_batches, virtual_stages)
    m = num_micro_batches
    if schedule == "gpipe":
        orders = [_gpipe(r, m) for r in range(pp)]
    elif schedule == "interleaved-1f1b":
        orders = [_interleaved(r, pp, m, virtual_stages) for r in range(pp)]
    else:
        orders = [_one_f_one_b(r, pp, m, zero_bubble=schedule == "zero-bubble") for r in range(pp)]
    return tuple(tuple(o) for o in orders)


def _one_f_one_b_arrays(pp: int, m: int, *, zero_bubble: bool) -> tuple[np.ndarray, np.ndarray]:
    """`_one_f_one_b` of every rank as (kind, micro_batch) arrays of shape (pp, ops per rank), placed
    by closed-form positions: rank r runs w = min(pp-r-1, m) warm-up forwards, then step k runs
    F(w+k) (while any are left), B(k) and, under ZB-H1, W(k-r) once k >= r; the remaining W's end it."""
    r = np.arange(pp)[:, None]
    k = np.arange(m)[None, :]
    w = np.minimum(pp - r - 1, m)
    length = (3 if zero_bubble else 2) * m
    kind = np.empty((pp, length), np.int64)
    mb = np.empty((pp, length), np.int64)
    rows = np.broadcast_to(r, (pp, m))

    def put(valid: np.ndarray, pos: np.ndarray, op_kind: int, op_mb: np.ndarray) -> None:
        kind[rows[valid], pos[valid]] = op_kind
        mb[rows[valid], pos[valid]] = np.broadcast_to(op_mb, (pp, m))[valid]

    put(k < w, np.broadcast_to(k, (pp, m)), FWD, k)                      # warm-up forwards
    has_f = w + k < m
    before = w + k + np.minimum(k, m - w) + (np.maximum(k - r, 0) if zero_bubble else 0)   # ops before step k
    put(has_f, before, FWD, w + k)
    put(np.ones((pp, m), bool), before + has_f, BWD, k)
    if zero_bubble:
        put(np.broadcast_to(k >= r, (pp, m)), before + has_f + 1, WGT, k - r)
        tail = k >= m - r                                                 # W(i), i >= m - r, at the end
        put(np.broadcast_to(tail, (pp, m)), np.broadcast_to(length - m + k, (pp, m)), WGT, k)
    return kind, mb


def _interleaved_arrays(rank: int, pp: int, m: int, v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_interleaved` as (kind, stage, micro_batch) arrays."""
    total = m * v
    warmup = min((v - 1) * pp + 2 * (pp - rank - 1), total)
    steady = total - warmup
    k = np.arange(total)
    mb = (k // (pp * v)) * pp + k % pp
    f_stage = ((k // pp) % v) * pp + rank
    b_stage = (v - 1 - (k // pp) % v) * pp + rank
    order_kind = np.concatenate([np.full(warmup, FWD), np.tile([FWD, BWD], steady), np.full(warmup, BWD)])
    order_k = np.concatenate([k[:warmup], np.stack([k[warmup:], k[:steady]], axis=1).ravel(), k[steady:]])
    stage = np.where(order_kind == FWD, f_stage[order_k], b_stage[order_k])
    return order_kind, stage, mb[order_k]


@lru_cache(maxsize=64)
def rank_order_arrays(schedule: str, pp: int, num_micro_batches: int,
                      virtual_stages: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`rank_orders` as three int64 arrays of shape (pp, ops per rank): kind, stage, micro-batch
    (built with numpy: the simulator's per-shape setup at pp=64, m=256 without 49k Python tuples).
    Cached; the arrays are read-only."""
    check_schedule_args(schedule, pp, num_micro_batches, virtual_stages)
    m, v = num_micro_batches, virtual_stages
    if schedule in ("1f1b", "zero-bubble"):
        kind, mb = _one_f_one_b_arrays(pp, m, zero_bubble=schedule == "zero-bubble")
        kinds, stages, mbs = kind, np.broadcast_to(np.arange(pp)[:, None], kind.shape), mb
    elif schedule == "gpipe":
        kinds = np.broadcast_to(np.repeat([FWD, BWD], m), (pp, 2 * m))
        mbs = np.broadcast_to(np.tile(np.arange(m), 2), (pp, 2 * m))
        stages = np.broadcast_to(np.arange(pp)[:, None], (pp, 2 * m))
    else:
        kinds, stages, mbs = zip(*(_interleaved_arrays(r, pp, m, v) for r in range(pp)), strict=True)
    out = tuple(np.array(x, dtype=np.int64) for x in (kinds, stages, mbs))
    for a in out:
        a.flags.writeable = False
    return out
