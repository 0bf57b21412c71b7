"""`costmodel.check_plan`'s rules, vectorized over arrays of plans so the planner filters millions at once.

Each `Rule` mirrors one branch of `costmodel.step.checks.plan_problems` (same condition, same field);
tests/test_planner_rules.py checks that `bulk_problems` agrees with `plan_problems` on a grid, so a
rule changed in one place and not the other fails the suite."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from costmodel.specs import ClusterSpec, ModelSpec, TrainingSpec

from .constraints import SCHEDULES

__all__ = ["Rule", "RULES", "bulk_problems", "INTERLEAVED"]

INTERLEAVED = SCHEDULES.index("interleaved-1f1b")
Columns = Mapping[str, np.ndarray]
Check = Callable[[ModelSpec, "ClusterSpec | None", TrainingSpec, Columns], np.ndarray]


@dataclass(frozen=True)
class Rule:
    """One consistency rule: `check` returns True where a plan breaks it.

    `needs` lists the columns it reads (dp tp pp cp ep mb v schedule sp explicit_split), so the space
    builder applies it as soon as those columns exist."""

    code: str
    field: str
    label: str
    needs: tuple[str, ...]
    check: Check


def _batch_ok(training: TrainingSpec, c: Columns) -> np.ndarray:
    return training.global_batch_size % (c["dp"] * c["mb"]) == 0


def _uneven(m: ModelSpec, _c: ClusterSpec | None, _t: TrainingSpec, c: Columns) -> np.ndarray:
    stages = c["pp"] * c["v"]
    explicit = np.asarray(c.get("explicit_split", False), dtype=bool)
    return (stages <= m.total_layers) & ~explicit & (m.total_layers % stages != 0)


def _interleave(_m: ModelSpec, _c: ClusterSpec | None, t: TrainingSpec, c: Columns) -> np.ndarray:
    ok = _batch_ok(t, c)
    m = t.global_batch_size // (c["dp"] * c["mb"])
    return (c["schedule"] == INTERLEAVED) & ok & (m % c["pp"] != 0)


def _sp_seq(_m: ModelSpec, _c: ClusterSpec | None, t: TrainingSpec, c: Columns) -> np.ndarray:
    seq_ok = t.seq_len % c["cp"] == 0
    return seq_ok & c["sp"].astype(bool) & ((t.seq_len // c["cp"]) % c["tp"] != 0)


def _gpus(_m: ModelSpec, cl: ClusterSpec | None, _t: TrainingSpec, c: Columns) -> np.ndarray:
    world = c["dp"] * c["tp"] * c["pp"] * c["cp"]
    return world > cl.num_gpus if cl is not None else np.zeros(world.shape, dtype=bool)


def _ep(c: Columns) -> np.ndarray:
    """The ep column (1 where the columns have none: plans without expert parallelism)."""
    return np.asarray(c["ep"]) if "ep" in c else np.ones(np.shape(c["tp"]), dtype=np.int64)


def _full(c: Columns, value: bool) -> np.ndarray:
    return np.full(np.shape(c["tp"]), value, dtype=bool)


RULES: tuple[Rule, ...] = (
    Rule("tp_heads", "tp", "tp does not divide num_heads", ("tp",),
         lambda m, _c, _t, c: m.num_heads % c["tp"] != 0),
    Rule("tp_kv_heads", "tp", "tp does not divide num_kv_heads", ("tp",),
         lambda m, _c, _t, c: m.kv_heads % c["tp"] != 0),
    Rule("tp_ffn", "tp", "tp does not divide ffn_hidden_size", ("tp",),
         lambda m, _c, _t, c: m.ffn_size % c["tp"] != 0),
    Rule("gpus", "dp", "needs more GPUs than the cluster has", ("dp", "tp", "pp", "cp"), _gpus),
    Rule("seq_len", "seq_len", "seq_len exceeds the model's max_seq_len", ("tp",),
         lambda m, _c, t, c: _full(c, t.seq_len > m.max_seq_len)),
    Rule("cp_seq", "cp", "cp does not divide seq_len", ("cp",),
         lambda _m, _c, t, c: t.seq_len % c["cp"] != 0),
    Rule("cp_arch", "cp", "context parallelism needs a decoder model", ("cp",),
         lambda m, _c, _t, c: (c["cp"] > 1) & (m.arch != "decoder")),
    Rule("ep_dp", "ep", "ep does not divide dp*cp", ("dp", "cp", "ep"),
         lambda _m, _c, _t, c: (c["dp"] * c["cp"]) % _ep(c) != 0),
    Rule("ep_moe", "ep", "ep > 1 needs a mixture-of-experts model", ("ep",),
         lambda m, _c, _t, c: (_ep(c) > 1) & (not m.is_moe)),
    Rule("ep_experts", "ep", "ep does not divide num_experts", ("ep",),
         lambda m, _c, _t, c: _full(c, m.is_moe) & ((m.num_experts or 1) % _ep(c) != 0)),
    Rule("pp_layers", "pp", "pp*virtual_stages exceeds the number of layers", ("pp", "v"),
         lambda m, _c, _t, c: c["pp"] * c["v"] > m.total_layers),
    Rule("pp_uneven", "pp", "layers do not split evenly over the stages", ("pp", "v", "explicit_split"),
         _uneven),
    Rule("batch", "micro_batch_size", "dp*micro_batch_size does not divide global_batch_size",
         ("dp", "mb"), lambda _m, _c, t, c: ~_batch_ok(t, c)),
    Rule("interleave_mb", "schedule", "interleaved-1f1b needs micro-batches to be a multiple of pp",
         ("dp", "mb", "pp", "schedule"), _interleave),
    Rule("sp_seq", "sequence_parallel", "tp does not divide seq_len/cp (sequence parallel)",
         ("tp", "cp", "sp"), _sp_seq),
)


def bulk_problems(model: ModelSpec, cluster: ClusterSpec | None, training: TrainingSpec,
                  columns: Columns, *, rules: tuple[Rule, ...] = RULES) -> dict[str, np.ndarray]:
    """For each rule code, a boolean array: True where the plan breaks that rule.

    `columns` holds integer arrays dp tp pp cp ep mb v, `schedule` as an index into SCHEDULES, `sp` as
    bool, and optionally `explicit_split` (True where layers_per_stage is given with the right sum)."""
    cols = {k: np.asarray(v) for k, v in columns.items()}
    return {rule.code: np.asarray(rule.check(model, cluster, training, cols), dtype=bool) for rule in rules}
