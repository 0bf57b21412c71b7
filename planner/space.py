"""The search space as numpy arrays: every factorization of the GPU count into dp x tp x pp x cp (with
ep, a divisor of dp*cp, for mixture-of-experts models), times micro-batch sizes, schedules and virtual stages, ZeRO stages, recompute policies, sequence parallel
and placement orders, filtered in bulk by `planner.rules` (the same rules as `costmodel.check_plan`).

The space is built in four expansion stages (degrees; schedule x virtual stages; micro-batch; the
rest), each filtered as soon as its rules can be checked. A rejected row is counted with the number
of plans it would have expanded to, under the first rule it breaks (stage order, then `RULES`
order), so `generated == len(space) + sum(rejected.values())`.

Knob combinations that `ParallelPlan` itself forbids or that change nothing are never generated:
virtual_stages > 1 only with interleaved-1f1b, a schedule only when pp > 1, ZeRO only when dp > 1,
sequence parallel only when tp > 1, ep only as a divisor of dp*cp (and above 1 only for a
mixture-of-experts model unless asked), and one placement per distinct order of the axes of degree > 1."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from costmodel.specs import ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec

from .constraints import RECOMPUTES, SCHEDULES, Constraints
from .rules import INTERLEAVED, RULES, Rule

__all__ = ["Space", "build_space", "world_sizes", "KNOBS"]

KNOBS = ("dp", "tp", "pp", "cp", "ep", "mb", "v", "schedule", "zero", "recompute", "sp", "placement")
_AXIS_INDEX = {"tp": 0, "cp": 1, "dp": 2, "pp": 3}


@dataclass(frozen=True)
class Space:
    """Valid candidates as columns (`KNOBS`, small integers; schedule/recompute/placement are indices
    into `SCHEDULES`, `RECOMPUTES` and `placements`), with rejection counts by rule code."""

    columns: dict[str, np.ndarray]
    placements: tuple[tuple[str, ...], ...]
    rejected: dict[str, int] = field(default_factory=dict)
    generated: int = 0
    zero_key: np.ndarray | None = field(default=None, repr=False, compare=False)
    """Optional: a non-negative int64 per candidate, equal exactly for candidates that differ at most
    in their ZeRO stage (`planner.scoring.zero_table` prices those together)."""

    def __len__(self) -> int:
        return int(self.columns["dp"].shape[0])

    def subset(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.columns.items()}

    def plan(self, i: int, *, layers_per_stage: tuple[int, ...] | None = None) -> ParallelPlan:
        """The `ParallelPlan` of candidate `i` (optionally with an explicit layer split)."""
        c = self.columns
        return ParallelPlan(
            dp=int(c["dp"][i]), tp=int(c["tp"][i]), pp=int(c["pp"][i]), cp=int(c["cp"][i]), ep=int(c["ep"][i]),
            micro_batch_size=int(c["mb"][i]), virtual_stages=int(c["v"][i]),
            schedule=SCHEDULES[int(c["schedule"][i])], zero_stage=int(c["zero"][i]),
            recompute=RECOMPUTES[int(c["recompute"][i])], sequence_parallel=bool(c["sp"][i]),
            placement=self.placements[int(c["placement"][i])], layers_per_stage=layers_per_stage,
        )

    def frame(self) -> pd.DataFrame:
        """The candidates as a DataFrame with readable schedule/recompute/placement columns."""
        c = self.columns
        df = pd.DataFrame({k: c[k] for k in ("dp", "tp", "pp", "cp", "ep", "mb", "v", "zero")})
        df["schedule"] = np.asarray(SCHEDULES, dtype=object)[c["schedule"]]
        df["recompute"] = np.asarray(RECOMPUTES, dtype=object)[c["recompute"]]
        df["sp"] = c["sp"].astype(bool)
        df["placement"] = np.asarray(["-".join(p) for p in self.placements], dtype=object)[c["placement"]]
        return df


def world_sizes(cluster: ClusterSpec, constraints: Constraints) -> list[int]:
    """GPU counts to try: the whole cluster, or (allow_fewer_gpus) every divisor of a node and every
    whole number of nodes, from `min_gpus` up."""
    total = cluster.num_gpus
    if constraints.num_gpus is not None:
        if constraints.num_gpus > total:
            raise ValueError(f"num_gpus={constraints.num_gpus} exceeds the cluster's {total} GPUs; "
                             "add nodes or lower num_gpus")
        return [constraints.num_gpus]
    if not constraints.allow_fewer_gpus:
        return [total]
    g = cluster.gpus_per_node
    sizes = {d for d in range(1, g + 1) if g % d == 0} | {k * g for k in range(1, cluster.num_nodes + 1)}
    return sorted(s for s in sizes if constraints.min_gpus <= s <= total)


def _divisors(n: int) -> np.ndarray:
    small = np.arange(1, int(np.sqrt(n)) + 1)
    small = small[n % small == 0]
    return np.unique(np.concatenate([small, n // small]))


def _expert_degrees(cols: dict[str, np.ndarray], model: ModelSpec, cons: Constraints) -> dict[str, np.ndarray]:
    """Each degree row crossed with its ep values: the divisors of dp*cp the constraints allow (only
    ep = 1 for a dense model unless ep is fixed, so that the rule names the mistake)."""
    data = cols["dp"] * cols["cp"]
    if not model.is_moe and cons.ep is None:
        values = np.ones(1, dtype=np.int64)
    else:
        values = np.unique(np.concatenate([_divisors(int(d)) for d in np.unique(data)] or [np.ones(1, np.int64)]))
        values = values[cons.axis_allowed("ep", values)]
    out = _cross(cols, "ep", values.astype(np.int64))
    if cons.ep is not None:   # asked for: the rule 'ep_dp' counts the rows it cannot apply to
        return out
    return _take(out, (out["dp"] * out["cp"]) % out["ep"] == 0)


def _degrees(worlds: list[int], cons: Constraints) -> dict[str, np.ndarray]:
    parts: list[np.ndarray] = []
    for w in worlds:
        d = _divisors(w)
        tp, cp, pp = (a.ravel() for a in np.meshgrid(d, d, d, indexing="ij"))
        ok = w % (tp * cp * pp) == 0
        tp, cp, pp = tp[ok], cp[ok], pp[ok]
        parts.append(np.stack([w // (tp * cp * pp), tp, pp, cp], axis=1))
    deg = np.concatenate(parts) if parts else np.zeros((0, 4), dtype=np.int64)
    cols = {"dp": deg[:, 0], "tp": deg[:, 1], "pp": deg[:, 2], "cp": deg[:, 3]}
    keep = np.ones(deg.shape[0], dtype=bool)
    for axis in ("dp", "tp", "pp", "cp"):
        keep &= cons.axis_allowed(axis, cols[axis])
    return {k: v[keep].astype(np.int64) for k, v in cols.items()}


def _placement_ok(deg: dict[str, np.ndarray], placements: tuple[tuple[str, ...], ...]) -> np.ndarray:
    """[row, placement]: True for the first placement of each distinct order of the axes of degree > 1."""
    active = np.stack([deg[a] > 1 for a in ("tp", "cp", "dp", "pp")], axis=1)  # _AXIS_INDEX order
    keys = []
    for order in placements:
        key = np.zeros(active.shape[0], dtype=np.int64)
        for axis in order:
            i = _AXIS_INDEX[axis]
            key = np.where(active[:, i], key * 5 + i + 1, key)
        keys.append(key)
    k = np.stack(keys, axis=1) if keys else np.zeros((active.shape[0], 0), dtype=np.int64)
    ok = np.ones(k.shape, dtype=bool)
    for j in range(1, k.shape[1]):
        ok[:, j] = ~(k[:, :j] == k[:, j:j + 1]).any(axis=1)
    return ok


def _sched_pairs(cons: Constraints) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(schedule, v) pairs for pp == 1 and for pp > 1."""
    scheds = cons.schedule or SCHEDULES
    vs = cons.virtual_stages or tuple(range(1, cons.max_virtual_stages + 1))
    flat = [SCHEDULES.index(s) for s in scheds if s != "interleaved-1f1b"]
    multi = [(s, 1) for s in flat] if 1 in vs else []
    if "interleaved-1f1b" in scheds:
        multi += [(INTERLEAVED, v) for v in vs if v > 1]
    single = []
    if 1 in vs and flat:
        single = [(SCHEDULES.index("1f1b") if SCHEDULES.index("1f1b") in flat else flat[0], 1)]
    return single, multi


def _cross(cols: dict[str, np.ndarray], name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    n, k = cols["dp"].shape[0], len(values)
    out = {key: np.repeat(v, k) for key, v in cols.items()}
    out[name] = np.tile(np.asarray(values), n)
    return out


def _take(cols: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in cols.items()}


def build_space(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec,
                constraints: Constraints | None = None) -> Space:
    """Every candidate plan the constraints allow, filtered by `RULES`, as a `Space`."""
    cons = constraints or Constraints()
    placements = cons.placement
    mbs = np.array(cons.micro_batch_size or [2 ** i for i in range(16) if 2 ** i <= cons.max_micro_batch_size],
                   dtype=np.int64)
    mbs = mbs[mbs <= training.global_batch_size] if cons.micro_batch_size is None else mbs
    zeros = np.array(cons.zero_stage if cons.zero_stage is not None else (0, 1, 2, 3), dtype=np.int64)
    rcs = np.array([RECOMPUTES.index(r) for r in (cons.recompute or RECOMPUTES)], dtype=np.int64)
    sps = np.array(cons.sequence_parallel if cons.sequence_parallel is not None else (False, True))
    single, multi = _sched_pairs(cons)

    cols = _expert_degrees(_degrees(world_sizes(cluster, cons), cons), model, cons)
    cols["deg"] = np.arange(cols["dp"].shape[0])
    pl_ok = _placement_ok(cols, placements)
    n_pl = pl_ok.sum(axis=1)
    n_zero = np.where(cols["dp"] > 1, len(zeros), 1)
    n_sp = np.where(cols["tp"] > 1, len(sps), int((~sps.astype(bool)).any()))
    n_sv = np.where(cols["pp"] > 1, len(multi), len(single))
    tail = n_zero * len(rcs) * n_sp * n_pl  # plans per row after the micro-batch stage

    rejected: dict[str, int] = {}

    def apply(rows: dict[str, np.ndarray], stage_rules: list[Rule], weight: np.ndarray) -> dict[str, np.ndarray]:
        alive = np.ones(rows["dp"].shape[0], dtype=bool)
        for rule in stage_rules:
            bad = alive & np.asarray(rule.check(model, cluster, training, rows), dtype=bool)
            if bad.any():
                rejected[rule.code] = rejected.get(rule.code, 0) + int(weight[bad].sum())
            alive &= ~bad
        return _take(rows, alive)

    def stage(needs: set[str], done: set[str]) -> list[Rule]:
        return [r for r in RULES if set(r.needs) - {"explicit_split"} <= needs
                and not set(r.needs) - {"explicit_split"} <= done]

    a_cols = {"dp", "tp", "pp", "cp", "ep"}
    generated = int((n_sv * len(mbs) * tail).sum())
    cols = apply(cols, stage(a_cols, set()), n_sv * len(mbs) * tail)
    # stage B: schedule x virtual stages (structural: depends on pp > 1)
    pairs = np.array(single + multi, dtype=np.int64).reshape(-1, 2)
    n_single = len(single)
    cols = _cross(cols, "pair", np.arange(len(pairs)))
    structural = np.where(cols["pp"] > 1, cols["pair"] >= n_single, cols["pair"] < n_single)
    cols = _take(cols, structural)
    cols["schedule"], cols["v"] = pairs[cols["pair"], 0], pairs[cols["pair"], 1]
    del cols["pair"]
    # uneven (balanced) splits: for plain schedules by default, for interleaved ones on request
    cols["explicit_split"] = cons.uneven_stages & ((cols["v"] == 1) | cons.uneven_interleaved)
    b_cols = a_cols | {"v", "schedule"}
    cols = apply(cols, stage(b_cols, a_cols), len(mbs) * tail[cols["deg"]])
    # stage C: micro-batch size
    cols = _cross(cols, "mb", mbs)
    c_cols = b_cols | {"mb"}
    cols = apply(cols, stage(c_cols, b_cols), tail[cols["deg"]])
    # stage D: ZeRO x recompute x sequence parallel x placement (structurally pruned, then sp rule)
    cols["cid"] = np.arange(cols["dp"].shape[0])   # with rc, sp, placement: the candidate but its ZeRO stage
    cols = _cross(cols, "zero", zeros)
    cols = _take(cols, (cols["dp"] > 1) | (cols["zero"] == zeros.min()))  # ZeRO is moot without dp
    cols = _cross(cols, "recompute", rcs)
    cols = _cross(cols, "sp", sps)
    cols = _take(cols, (cols["tp"] > 1) | ~cols["sp"].astype(bool))
    cols = _cross(cols, "placement", np.arange(len(placements)))
    cols = _take(cols, pl_ok[cols["deg"], cols["placement"]])
    cols = apply(cols, stage(c_cols | {"sp", "zero", "recompute", "placement"}, c_cols),
                 np.ones(cols["dp"].shape[0], dtype=np.int64))
    out = {k: cols[k] for k in KNOBS}
    out["sp"] = out["sp"].astype(bool)
    zero_key = ((cols["cid"] * len(RECOMPUTES) + cols["recompute"]) * 2 + out["sp"]) * len(placements) + cols["placement"]
    return Space(columns=out, placements=placements, rejected=rejected, generated=generated, zero_key=zero_key)
