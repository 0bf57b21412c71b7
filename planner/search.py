"""`search`: the fastest plans that fit, found by bulk scoring and exact re-scoring.

1. `build_space` enumerates every candidate as arrays and filters the invalid ones in bulk.
2. `scoring.bulk_scores` prices all candidates at once (the closed form `costmodel.estimate_batch`
   runs, per degrees+placement group); candidates whose memory lower bound exceeds the GPU are
   rejected ('oom').
3. Candidates are re-scored exactly (`costmodel.estimate`; the balanced layer split where the
   layers do not divide, or everywhere with `rebalance=True`) in order of their bulk lower bound on
   step time, until the next lower bound exceeds the k-th best exact time. So the result is exactly
   what `search_exhaustive` (every candidate through the exact model, one by one) returns, in the
   same order, at a fraction of the cost. The pipeline simulations of the next candidates in that
   order run ahead in batches (`ExactScorer.prefetch`: one numpy sweep per schedule shape), which
   changes the cost, not the figures.

Ranking key: (step_time_s, GPUs used, peak bytes, candidate order), so results are deterministic.
Plans that differ only in placement and get the same figures are folded into the first in that order
(`planner.fold`; `fold_equivalent=False` keeps them apart); `top_k` counts the folded classes, in both
`search` and `search_exhaustive`.

Every ranked plan says whether the executor runs it on the cluster's device (`RankedPlan.not_runnable`:
the first rule of `costmodel.step.runnable` it breaks); `runnable_only=True` skips those plans while
re-scoring, so the top k are plans `paraplan run` trains (the skipped ones counted as rejections). No
rule depends on the placement, so the plans folded into one share its runnable status: skipping before
folding is the same as folding first and dropping the classes whose representative does not run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
from tqdm import tqdm

from costmodel.specs import ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec
from costmodel.step.estimate import resolve_calibration
from costmodel.step.runnable import device_kind, executor_unsupported

from .constraints import Constraints
from .exact import ExactScorer
from .explain import LABELS, explain_invalid, explain_oom
from .fold import EquivalenceFolder
from .pareto import pareto_indices
from .result import RankedPlan, SearchResult
from .scoring import bulk_scores
from .space import Space, build_space

__all__ = ["search", "search_exhaustive", "not_runnable", "OOM_REASON", "NOT_RUNNABLE_REASON", "MAX_RESCORE"]

OOM_REASON = "oom: does not fit in GPU memory"
NOT_RUNNABLE_REASON = "not runnable by the executor: {field}"
"""Rejection label of a plan `runnable_only` skips ({field}: the plan field the rule names)."""
_PARETO_MAX = 64
_PREFETCH_MIN, _PREFETCH_MAX = 32, 512   # candidates whose simulations run in one batch (doubling)
MAX_RESCORE = 4096


def _check_request(model: Any, cluster: Any, training: Any, top_k: Any) -> None:
    for name, value, cls in (("model", model, ModelSpec), ("cluster", cluster, ClusterSpec),
                             ("training", training, TrainingSpec)):
        if not isinstance(value, cls):
            raise ValueError(f"{name}: expected a {cls.__name__}, got {type(value).__name__} "
                             f"(build one with costmodel's load_model/get_cluster/TrainingSpec)")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r}: must be a positive integer")


def _key(est_time: float, world: int, peak: float, index: int) -> tuple[float, int, float, int]:
    return (est_time, world, peak, index)


def not_runnable(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, plan: ParallelPlan) -> str | None:
    """Why the executor cannot run `plan` on the cluster's device ('field: ...'), or None."""
    return executor_unsupported(plan, device=device_kind(cluster), model=model, seq_len=training.seq_len,
                                global_batch=training.global_batch_size)


def _marked(plans: tuple[RankedPlan, ...], runs: Callable[[ParallelPlan], str | None]) -> tuple[RankedPlan, ...]:
    """`plans` with `not_runnable` set by `runs` (a folded class's plans differ only in placement, which no
    rule of `costmodel.step.runnable` reads: the representative's status is its class's)."""
    return tuple(replace(r, not_runnable=runs(r.plan)) for r in plans)


def search(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, *, top_k: int = 10,
           calibration: Any = None, topology: Any = None, progress: bool = False,
           rebalance: bool = False, max_rescore: int = MAX_RESCORE, fold_equivalent: bool = True,
           runnable_only: bool = False, **constraints: Any) -> SearchResult:
    """The `top_k` fastest plans for `model` on `cluster` that fit in memory.

    Keyword constraints fix or bound any knob (`tp=8`, `max_pp=16`, `schedule="1f1b"`,
    `allow_fewer_gpus=True`; see `planner.Constraints`). Plans whose layers do not divide over the
    stages get the balanced split (`planner.balance`); `rebalance` also tries it where they divide.
    At most `max_rescore` candidates are re-scored exactly; `result.complete` says whether the
    lower bound closed before that (then the result equals `search_exhaustive`'s).
    `progress` shows a tqdm bar on stderr. Plans that differ only in placement and get the same
    figures are folded into the first (`RankedPlan.equivalent`, with the reason; `planner.fold`);
    `fold_equivalent=False` lists each of them as its own plan. Each plan carries `not_runnable` (why
    the executor cannot run it on the cluster's device, or None); `runnable_only` keeps only the plans
    it runs.
    A malformed request raises ValueError naming the field; an impossible one returns no plans and a
    `message` with numbers."""
    t0 = time.perf_counter()
    _check_request(model, cluster, training, top_k)
    calibration = resolve_calibration(cluster, calibration)   # a shipped profile of this GPU, if any
    cons = Constraints.from_kwargs(**constraints)
    space = build_space(model, cluster, training, cons)
    t_space = time.perf_counter()
    rejections = {LABELS[c]: n for c, n in space.rejected.items()}
    if len(space) == 0:
        return SearchResult(plans=(), rejections=rejections, num_candidates=space.generated,
                            elapsed_s=time.perf_counter() - t0,
                            message=explain_invalid(space.rejected, space.generated, cons))
    bar = tqdm(total=len(space), desc="scoring plans", unit="plan", disable=not progress, leave=False)
    bulk = bulk_scores(model, cluster, training, space, calibration=calibration, topology=topology,
                       rebalance=rebalance, on_chunk=bar.update)
    bar.close()
    t_bulk = time.perf_counter()
    scorer = ExactScorer(model, cluster, training, space, calibration=calibration, topology=topology,
                         rebalance=rebalance)
    cap = cluster.gpu.hbm_bytes
    fit = bulk["peak_bytes_lb"] <= cap
    world = space.columns["dp"] * space.columns["tp"] * space.columns["pp"] * space.columns["cp"]
    lb = bulk["step_time_s_lb"]
    cand = np.flatnonzero(fit)
    order = cand[np.lexsort((cand, world[cand], lb[cand]))]
    folder = EquivalenceFolder(gpus_per_node=cluster.gpus_per_node, enabled=fold_equivalent)
    ranked = folder.ranked  # sorted (key, estimate) of the distinct plans so far
    exact_oom = 0
    first_skip = ""
    complete = True
    rescore_bar = tqdm(total=None, desc="re-scoring", unit="plan", disable=not progress, leave=False)
    fetched, chunk = 0, _PREFETCH_MIN
    for pos, i in enumerate(order):
        if len(ranked) >= top_k and lb[i] > ranked[top_k - 1][0][0]:
            break
        if scorer.calls >= max_rescore:
            complete = False
            break
        if pos >= fetched:   # simulate the next candidates that can still make the top k in one batch
            nxt = order[pos:pos + chunk]
            if len(ranked) >= top_k:
                nxt = nxt[lb[nxt] <= ranked[top_k - 1][0][0]]
            scorer.prefetch(nxt[:max_rescore - scorer.calls])
            fetched, chunk = pos + chunk, min(2 * chunk, _PREFETCH_MAX)
        rescore_bar.update(1)
        est = scorer.best(int(i))
        if est is None:
            exact_oom += 1
            continue
        if runnable_only and (why := not_runnable(model, cluster, training, est.plan)):
            label = NOT_RUNNABLE_REASON.format(field=why.split(":", 1)[0])
            rejections[label] = rejections.get(label, 0) + 1
            first_skip = first_skip or why
            continue
        # keys are unique (candidate index last); an equivalent plan joins its class, not the ranking
        folder.add(_key(est.step_time_s, int(world[i]), est.memory.peak_bytes, int(i)), est)
    rescore_bar.close()
    t_rescore = time.perf_counter()
    oom = int((~fit).sum()) + exact_oom
    if oom:
        rejections[OOM_REASON] = oom
    runs = partial(not_runnable, model, cluster, training)
    plans = _marked(folder.ranked_plans(top_k), runs)
    message = ""
    skipped = sum(n for label, n in rejections.items() if label.startswith("not runnable"))
    if not plans and skipped:
        message = (f"no plan the executor runs: {skipped} plans that fit break its rules on "
                   f"{device_kind(cluster)} (e.g. {first_skip}); search without runnable_only to see them")
    elif not plans:
        message = _no_fit_message(model, cluster, training, cons, space, bulk, scorer)
    front_mem = _front(scorer, cand, lb, bulk["peak_bytes_lb"], world, mode="memory", fold=fold_equivalent,
                       runs=runs, runnable_only=runnable_only)
    front_gpu = _front(scorer, cand, lb, bulk["peak_bytes_lb"], world, mode="gpus", fold=fold_equivalent,
                       runs=runs, runnable_only=runnable_only)
    return SearchResult(plans=plans, pareto_memory=front_mem, pareto_gpus=front_gpu, rejections=rejections,
                        num_candidates=space.generated, num_valid=len(space),
                        num_fit=len(cand) - exact_oom, num_rescored=scorer.calls,
                        elapsed_s=time.perf_counter() - t0, message=message, complete=complete,
                        timings_s={"space_s": t_space - t0, "bulk_s": t_bulk - t_space,
                                   "rescore_s": t_rescore - t_bulk, "pareto_s": time.perf_counter() - t_rescore},
                        num_folded=sum(len(r.equivalent) for r in plans))


def _front(scorer: ExactScorer, cand: np.ndarray, time_lb: np.ndarray, peak_lb: np.ndarray,
           world: np.ndarray, *, mode: str, fold: bool = True, runs: Callable[[ParallelPlan], str | None],
           runnable_only: bool = False) -> tuple[RankedPlan, ...]:
    """Pareto front of step time vs peak memory (or GPUs used) over the exactly scored candidates:
    the ranked ones plus the front of the bulk figures (which brings in the low-memory and
    few-GPU extremes), each re-scored exactly; equivalent plans folded as in the ranking; each
    marked by `runs` (why the executor cannot run it), and with `runnable_only` over the runnable
    ones only."""
    if cand.size == 0:
        return ()
    other = peak_lb[cand] if mode == "memory" else world[cand].astype(float)
    front = cand[pareto_indices(time_lb[cand], other)][:_PARETO_MAX]
    scorer.prefetch(front)
    for i in front:
        scorer.best(int(i))
    ests = [e for e in scorer.scored() if e is not None]
    if runnable_only:
        ests = [e for e in ests if runs(e.plan) is None]
    if not ests:
        return ()
    folder = EquivalenceFolder(gpus_per_node=scorer.cluster.gpus_per_node, enabled=fold)
    for j, e in enumerate(ests):
        folder.add((e.step_time_s, e.num_gpus, e.memory.peak_bytes, j), e)
    reps = folder.ranked_plans()
    ests = [r.estimate for r in reps]
    t = np.array([e.step_time_s for e in ests])
    o = np.array([e.memory.peak_bytes if mode == "memory" else e.num_gpus for e in ests], dtype=float)
    keep = pareto_indices(t, o)
    return tuple(RankedPlan(r + 1, ests[j].plan, ests[j], runs(ests[j].plan), equivalent=reps[j].equivalent,
                            equivalent_note=reps[j].equivalent_note) for r, j in enumerate(keep))


def _no_fit_message(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, cons: Constraints,
                    space: Space, bulk: dict[str, np.ndarray], scorer: ExactScorer) -> str:
    i = int(np.argmin(bulk["peak_bytes_lb"]))
    est = scorer.best(i, require_fit=False)
    peak = est.memory.peak_bytes if est is not None else float(bulk["peak_bytes_lb"][i])

    # the knobs that minimize memory, for the "how many GPUs would fit" probe (cheap: few groups)
    lean = Constraints.from_kwargs(**{**{f: getattr(cons, f) for f in ("dp", "tp", "pp", "cp", "ep", "max_dp",
                                                                      "max_tp", "max_pp", "max_cp", "max_ep")},
                                      "micro_batch_size": 1, "zero_stage": max(cons.zero_stage or (3,)),
                                      "recompute": "full" if "full" in (cons.recompute or ("full",)) else None,
                                      "schedule": "1f1b", "virtual_stages": 1, "placement": [cons.placement[0]]})

    def fits_with(nodes: int) -> bool:
        bigger = ClusterSpec.model_validate({**cluster.model_dump(), "num_nodes": nodes})
        sp = build_space(model, bigger, training, lean)
        if len(sp) == 0:
            return False
        b = bulk_scores(model, bigger, training, sp, calibration=scorer.calibration)
        return bool((b["peak_bytes_lb"] <= bigger.gpu.hbm_bytes).any())

    return explain_oom(min_peak_bytes=peak, min_plan=est.plan if est is not None else space.plan(i),
                       cluster=cluster, constraints=cons, fits_with_gpus=fits_with, max_growth=64)


def search_exhaustive(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, *, top_k: int = 10,
                      calibration: Any = None, topology: Any = None, rebalance: bool = False,
                      fold_equivalent: bool = True, **constraints: Any) -> list[RankedPlan]:
    """Reference search: every valid candidate through the exact cost model one by one (slow; for
    tests and small spaces). Returns the ranked plans `search` must return (folded the same way)."""
    _check_request(model, cluster, training, top_k)
    calibration = resolve_calibration(cluster, calibration)
    cons = Constraints.from_kwargs(**constraints)
    space = build_space(model, cluster, training, cons)
    scorer = ExactScorer(model, cluster, training, space, calibration=calibration, topology=topology,
                         rebalance=rebalance)
    folder = EquivalenceFolder(gpus_per_node=cluster.gpus_per_node, enabled=fold_equivalent)
    for i in range(len(space)):
        est = scorer.best(i)
        if est is not None:
            folder.add(_key(est.step_time_s, est.num_gpus, est.memory.peak_bytes, i), est)
    return list(_marked(folder.ranked_plans(top_k), partial(not_runnable, model, cluster, training)))
