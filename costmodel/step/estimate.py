"""`estimate`: the predicted step time and memory of one plan (`StepEstimate`).

Even stage splits use the closed-form pipeline of `costmodel.step.costs` (the same code `estimate_batch`
runs on arrays); explicit `layers_per_stage` run the event simulation of `costmodel.pipeline.sim` on
per-(virtual-)stage times built from the same block costs (`costmodel.step.simulate`;
`prefetch_simulations` batches those simulations for many plans). `timeline=True` adds the simulated
events and never changes a figure: an even split keeps its closed-form numbers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..calibration.gpu_profiles import check_profile_gpu, default_gpu_profile, profile_label
from ..layer.compute import DEFAULT_EFFICIENCY, EfficiencyModel
from ..layer.cp_variant import CP_ATTENTION_CODES
from ..layer.flops import RECOMPUTE_CODES, step_flops
from ..layer.memory import SCHEDULE_CODES, inflight_chunks
from ..network.comm import build_comm_model
from ..specs import (
    ClusterSpec,
    MemoryBreakdown,
    ModelSpec,
    ParallelPlan,
    StepEstimate,
    TimeBreakdown,
    TimelineEvent,
    TrainingSpec,
)
from .checks import check_plan
from .costs import (
    Knobs,
    StepContext,
    _cross_layers_on_rank,
    build_context,
    rank_state,
    step_costs,
)
from .simulate import cached_stage_times, check_timeline, prefetch, simulated_costs
from .split import needs_split, with_balanced_split

__all__ = ["estimate", "knobs_from_plan", "step_context", "comm_model", "MemoComm", "prefetch_simulations",
           "resolve_calibration", "step_end_events"]

_CTX: dict[tuple, tuple[tuple, StepContext]] = {}
_COMM: dict[tuple, tuple[tuple, Any]] = {}
_TOPO: dict[tuple, tuple[tuple, Any]] = {}
_FAST_COMM: dict[tuple, tuple] = {}


def _remember(cache: dict, key: tuple, keep: tuple, make: Any) -> Any:
    """Memoize by object identities; `keep` holds the objects so their ids stay theirs."""
    hit = cache.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], keep, strict=True)):
        return hit[1]
    if len(cache) > 4096:
        cache.clear()
    value = make()
    cache[key] = (keep, value)
    return value


def resolve_calibration(cluster: ClusterSpec, calibration: Any) -> Any:
    """The profile an estimate uses: the one given, else the shipped profile of the cluster's GPU
    (`costmodel/data/gpu_profiles/<gpu>.json`, none yet), else None. `False` asks for none at all (the
    stack's analytical efficiencies even where a profile is shipped)."""
    if calibration is False:
        return None
    return calibration if calibration is not None else default_gpu_profile(cluster.gpu.name)


def step_context(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, *,
                 efficiency: EfficiencyModel = DEFAULT_EFFICIENCY, calibration: Any = None) -> StepContext:
    """The (memoized) StepContext of a model, cluster and training spec. A profile with measured kernel
    rates of another GPU than the cluster's is refused (ValueError naming the GPU it was measured on)."""
    keep = (model, cluster, training, efficiency, calibration)

    def build() -> StepContext:
        check_profile_gpu(calibration, cluster.gpu.name)
        return build_context(model, cluster, training, efficiency=efficiency, calibration=calibration)

    return _remember(_CTX, tuple(map(id, keep)), keep, build)


def comm_model(cluster: ClusterSpec, plan: ParallelPlan, *, topology: Any = None, calibration: Any = None) -> Any:
    """The CommModel for `plan`'s degrees and placement, memoized; the topology graph is built once
    per (cluster, calibration) and shared by every degree combination."""
    fast = (id(cluster), id(topology), id(calibration), plan.tp, plan.cp, plan.dp, plan.pp, plan.ep, plan.placement)
    hit = _FAST_COMM.get(fast)
    if hit is not None and hit[0] is cluster and hit[1] is topology and hit[2] is calibration:
        return hit[3]
    kw: dict[str, Any] = {}
    if calibration is not None:
        kw["calibration"] = calibration
    if topology is None:
        keep = (cluster, calibration)
        probe = _remember(_TOPO, tuple(map(id, keep)), keep, lambda: build_comm_model(
            cluster, ParallelPlan(), **kw))
        topology = getattr(probe, "topology", None)
    if topology is not None:
        kw["topology"] = topology
    given_topology = fast[1]
    keep = (cluster, topology, calibration)
    key = (*map(id, keep), plan.tp, plan.cp, plan.dp, plan.pp, plan.ep, plan.placement)
    comm = _remember(_COMM, key, keep, lambda: MemoComm(build_comm_model(cluster, plan, **kw)))
    if len(_FAST_COMM) > 4096:
        _FAST_COMM.clear()
    _FAST_COMM[fast] = (cluster, topology if given_topology != id(None) else None, calibration, comm)
    return comm


class MemoComm:
    """A CommModel whose scalar `time_s` answers are memoized (a pure function of its arguments);
    array queries pass through."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.links = getattr(inner, "links", None)
        self._memo: dict[tuple, float] = {}
        self.unit_memo: dict[tuple, tuple] = {}

    def time_s(self, axis: str, op: str, nbytes: Any) -> Any:
        if isinstance(nbytes, np.ndarray):
            return self.inner.time_s(axis, op, nbytes)
        key = (axis, op, nbytes)
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) > 65536:
                self._memo.clear()
            hit = self._memo[key] = float(self.inner.time_s(axis, op, nbytes))
        return hit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def knobs_from_plan(plan: ParallelPlan) -> Knobs:
    """The plan's knobs as the numbers `costmodel.step.costs` reads."""
    return Knobs(dp=plan.dp, tp=plan.tp, pp=plan.pp, cp=plan.cp, mb=plan.micro_batch_size,
                 v=plan.virtual_stages, schedule=SCHEDULE_CODES[plan.schedule], zero=plan.zero_stage,
                 recompute=RECOMPUTE_CODES[plan.recompute], sp=int(plan.sequence_parallel),
                 cp_attn=CP_ATTENTION_CODES[plan.cp_attention], ep=plan.ep)


def estimate(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, plan: ParallelPlan, *,
             calibration: Any = None, topology: Any = None, timeline: bool = False,
             efficiency: EfficiencyModel = DEFAULT_EFFICIENCY) -> StepEstimate:
    """Predict one optimizer step of `plan`: time breakdown (parts sum to `step_time_s`), memory of
    the most loaded GPU, per-rank memory, and with `timeline=True` the simulated pipeline events.

    When pp * virtual_stages does not divide the layers and the plan gives no `layers_per_stage`, the
    stages are balanced by their priced time (`costmodel.step.split`); the estimate's plan carries the
    chosen split.

    Raises PlanError (a ValueError naming the field) for an invalid plan; a plan that does not fit
    still gets its estimate (`est.fits` is False; `costmodel.evaluate` turns it into a Rejection)."""
    check_plan(model, cluster, training, plan, auto_split=True)
    if timeline:   # refuse a trace too large to draw before pricing anything
        check_timeline(plan.schedule, plan.pp, plan.virtual_stages, plan.num_micro_batches(training.global_batch_size))
    calibration = resolve_calibration(cluster, calibration)
    ctx = step_context(model, cluster, training, efficiency=efficiency, calibration=calibration)
    comm = comm_model(cluster, plan, topology=topology, calibration=calibration)
    k = knobs_from_plan(plan)
    if needs_split(model, plan):
        plan = with_balanced_split(ctx, k, comm, plan)
    events: tuple = ()
    if plan.layers_per_stage is None:
        out = step_costs(ctx, k, comm, memo=getattr(comm, "unit_memo", None))
        stage_mem = _closed_form_stage_memory(ctx, k, comm, out)
        if timeline:   # the simulated schedule draws the step; the figures stay the closed form's
            st = cached_stage_times(ctx, k, comm, plan.schedule, plan.stage_layers(ctx.shape.num_layers))
            events = simulated_costs(ctx, k, comm, st, timeline=True)[2]
    else:
        st = cached_stage_times(ctx, k, comm, plan.schedule, plan.stage_layers(ctx.shape.num_layers))
        out, state, events = simulated_costs(ctx, k, comm, st, timeline=timeline)
        stage_mem = _stage_memory(state, k.pp)
    if timeline:
        events = (*events, *step_end_events(events, out, pp=plan.pp))
    return _to_estimate(ctx, plan, out, stage_mem, events, profile_label(calibration))


def step_end_events(pipeline: tuple[TimelineEvent, ...], out: dict[str, Any], *, pp: int) -> list[TimelineEvent]:
    """What follows the pipeline on every rank: the exposed gradient reduction ('dp_comm': over the
    dp x cp replicas, as `dp_comm_s` counts it) and the optimizer step (with the per-step overhead), as
    `out`'s breakdown counts them on the critical path. They start where the pipeline's last op ends,
    so the trace ends at `step_time_s` wherever the simulated and the closed-form pipeline agree
    (uniform stages)."""
    start = max((e.end_s for e in pipeline), default=0.0)
    dp_s = float(out["dp_comm_s"])
    opt_s = float(out["optimizer_s"])
    events = []
    for rank in range(pp):
        if dp_s > 0:
            events.append(TimelineEvent(stage=rank, kind="dp_comm", start_s=start, end_s=start + dp_s))
        events.append(TimelineEvent(stage=rank, kind="optimizer", start_s=start + dp_s, end_s=start + dp_s + opt_s))
    return events


def _construct(cls: Any, **values: Any) -> Any:
    """A spec instance from values valid by construction, without validation: what
    `model_construct` does for fully specified fields, at a fraction of its cost (hot path)."""
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def _membreak(rank: dict[str, Any]) -> MemoryBreakdown:
    return _construct(MemoryBreakdown,
        parameters_bytes=float(rank["params_bytes"]), gradients_bytes=float(rank["grads_bytes"]),
        optimizer_bytes=float(rank["optimizer_bytes"]), activations_bytes=float(rank["activations_bytes"]),
        buffers_bytes=float(rank["buffers_bytes"]), peak_bytes=float(rank["peak"]))


def _closed_form_stage_memory(ctx: StepContext, k: Knobs, comm: Any, out: dict) -> tuple[MemoryBreakdown, ...]:
    """Memory of every pipeline rank; middle ranks of a decoder-only model differ from each other
    only in their in-flight activations, so one full rank state serves them all."""
    ranks = out["_ranks"]
    if k.pp <= 2:
        return tuple(_membreak(r) for r in ranks)
    sh = ctx.shape
    enc, dec = out["_blocks"]
    per_rank = sh.num_layers / k.pp
    m = out["num_micro_batches"]
    mids = []
    if sh.n_dec:
        for rank in range(1, k.pp - 1):
            n_dec = float(_cross_layers_on_rank(rank, k.pp, k.v, sh.n_enc, sh.num_layers))
            n_enc = per_rank - n_dec
            params = n_enc * enc.params + n_dec * dec.params
            mids.append(_membreak(rank_state(ctx, k, comm, rank, m, n_enc, n_dec, enc, dec, 0.0, 0.0, params,
                                             with_time=False)))
        return (_membreak(ranks[0]), *mids, _membreak(ranks[-1]))
    # rank 0 differs from a middle rank only by the embedding's parameters (states are linear in the
    # parameter count) and its in-flight count; buffers are equal (no logits on either)
    r0 = ranks[0]
    scale = per_rank * enc.params / r0["params"]
    per_chunk = per_rank * enc.act_bytes / k.v
    working = r0["activations_bytes"] - inflight_chunks(k.schedule, 0, k.pp, m, k.v) * per_chunk
    w, g, o = (float(r0["params_bytes"] * scale), float(r0["grads_bytes"] * scale),
               float(r0["optimizer_bytes"] * scale))
    buf = float(r0["buffers_bytes"])
    fixed_peak = w + g + o + buf
    new, put, pp, v, sched = object.__new__, object.__setattr__, k.pp, k.v, k.schedule
    fields_set = set(MemoryBreakdown.model_fields)   # shared: frozen instances never change it
    for rank in range(1, pp - 1):   # inflight_chunks and _construct inlined: this loop is the hot path
        if sched == 2:
            chunks = min((v - 1) * pp + 2 * (pp - rank - 1) + 1, m * v)
        else:
            chunks = m if sched == 0 else (min(pp, m) if sched == 3 else min(pp - rank, m))
        acts = float(chunks * per_chunk + working)
        values = {"parameters_bytes": w, "gradients_bytes": g, "optimizer_bytes": o, "activations_bytes": acts,
                  "buffers_bytes": buf, "peak_bytes": fixed_peak + acts}
        obj = new(MemoryBreakdown)
        put(obj, "__dict__", values)
        put(obj, "__pydantic_fields_set__", fields_set)
        put(obj, "__pydantic_extra__", None)
        put(obj, "__pydantic_private__", None)
        mids.append(obj)
    return (_membreak(ranks[0]), *mids, _membreak(ranks[-1]))


def _stage_memory(state: dict[str, np.ndarray], pp: int) -> tuple[MemoryBreakdown, ...]:
    """Per-rank MemoryBreakdowns from `simulated_costs`' per-rank arrays (`_construct` inlined, as in
    `_closed_form_stage_memory`: valid by construction, one per rank)."""
    cols = [state[key].tolist() for key in ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes",
                                            "buffers_bytes", "peak")]
    new, put = object.__new__, object.__setattr__
    fields_set = set(MemoryBreakdown.model_fields)   # shared: frozen instances never change it
    out = []
    for p, g, o, a, b, pk in zip(*cols, strict=True):
        obj = new(MemoryBreakdown)
        put(obj, "__dict__", {"parameters_bytes": float(p), "gradients_bytes": float(g), "optimizer_bytes": float(o),
                              "activations_bytes": float(a), "buffers_bytes": float(b), "peak_bytes": float(pk)})
        put(obj, "__pydantic_fields_set__", fields_set)
        put(obj, "__pydantic_extra__", None)
        put(obj, "__pydantic_private__", None)
        out.append(obj)
    return tuple(out)


def prefetch_simulations(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec,
                         plans: Iterable[ParallelPlan], *, calibration: Any = None, topology: Any = None,
                         efficiency: EfficiencyModel = DEFAULT_EFFICIENCY) -> int:
    """Run the pipeline simulations that `estimate` will need for `plans` (those with an explicit
    `layers_per_stage`) in batches, one numpy sweep per schedule shape, so that the `estimate` calls
    that follow find them memoized. Results are unchanged; invalid plans are skipped (their
    `estimate` raises). Returns how many simulations ran."""
    calibration = resolve_calibration(cluster, calibration)
    ctx = step_context(model, cluster, training, efficiency=efficiency, calibration=calibration)
    todo = []
    for plan in plans:
        if plan.layers_per_stage is None:
            continue
        try:
            check_plan(model, cluster, training, plan)
        except ValueError:
            continue
        comm = comm_model(cluster, plan, topology=topology, calibration=calibration)
        todo.append(cached_stage_times(ctx, knobs_from_plan(plan), comm, plan.schedule, plan.layers_per_stage))
    return prefetch(todo)


def _to_estimate(ctx: StepContext, plan: ParallelPlan, out: dict, stage_mem: tuple,
                 events: tuple, gpu_profile: str | None = None) -> StepEstimate:
    """Assemble the StepEstimate (fields computed here are valid by construction)."""
    gpus = plan.world_size
    step = float(out["step_time_s"])
    rc = RECOMPUTE_CODES[plan.recompute]
    flops = ctx.memo.get(("flops", rc))
    if flops is None:
        flops = ctx.memo[("flops", rc)] = step_flops(ctx.shape, ctx.global_batch, ctx.seq_len, rc)
    model_flops, hw_flops = flops
    per_gpu = step * gpus
    time = _construct(TimeBreakdown,
        compute_s=float(out["compute_s"]), tp_comm_s=float(out["tp_comm_s"]), cp_comm_s=float(out["cp_comm_s"]),
        ep_comm_s=float(out["ep_comm_s"]), dp_comm_s=float(out["dp_comm_s"]), pp_comm_s=float(out["pp_comm_s"]), bubble_s=float(out["bubble_s"]),
        optimizer_s=float(out["optimizer_s"]))
    memory = _construct(MemoryBreakdown,
        parameters_bytes=float(out["parameters_bytes"]), gradients_bytes=float(out["gradients_bytes"]),
        optimizer_bytes=float(out["optimizer_bytes"]), activations_bytes=float(out["activations_bytes"]),
        buffers_bytes=float(out["buffers_bytes"]), peak_bytes=float(out["peak_bytes"]))
    return _construct(StepEstimate,
        plan=plan, num_gpus=gpus, step_time_s=step, tokens_per_s=ctx.global_batch * ctx.seq_len / step,
        model_tflops_per_gpu=model_flops / per_gpu / 1e12, hardware_tflops_per_gpu=hw_flops / per_gpu / 1e12,
        mfu=model_flops / per_gpu / ctx.peak_flops_per_s, hfu=hw_flops / per_gpu / ctx.peak_flops_per_s,
        time=time, memory=memory, stage_memory=stage_mem, capacity_bytes=float(ctx.hbm_bytes),
        timeline=tuple(events), stack=ctx.stack.name if ctx.stack is not None else "megatron", gpu_profile=gpu_profile)

