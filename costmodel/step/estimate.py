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
from ..layer.memory import SCHEDULE_CODES
from ..network.comm import build_comm_model
from ..specs import (
    MEMORY_SAFETY_MARGIN,
    PEAK_MOMENTS,
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
             efficiency: EfficiencyModel = DEFAULT_EFFICIENCY,
             memory_margin: float = MEMORY_SAFETY_MARGIN) -> StepEstimate:
    """Predict one optimizer step of `plan`: time breakdown (parts sum to `step_time_s`), memory of
    the most loaded GPU, per-rank memory, and with `timeline=True` the simulated pipeline events.

    When pp * virtual_stages does not divide the layers and the plan gives no `layers_per_stage`, the
    stages are balanced by their priced time (`costmodel.step.split`); the estimate's plan carries the
    chosen split.

    Raises PlanError (a ValueError naming the field) for an invalid plan; a plan that does not fit
    still gets its estimate (`est.fits` is False: its peak exceeds the GPU's memory less
    `memory_margin`; `costmodel.evaluate` turns it into a Rejection)."""
    if not 0 <= memory_margin < 1:
        raise ValueError(f"memory_margin={memory_margin}: give a share of the GPU's memory in [0, 1), e.g. 0.05")
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
    return _to_estimate(ctx, plan, out, stage_mem, events, profile_label(calibration), memory_margin)


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


_MEMORY_KEYS = (("parameters_bytes", "params_bytes"), ("gradients_bytes", "grads_bytes"),
                ("optimizer_bytes", "optimizer_bytes"), ("activations_bytes", "activations_bytes"),
                ("buffers_bytes", "buffers_bytes"), ("temporaries_bytes", "temporaries_bytes"),
                ("allocated_bytes", "allocated"), ("reserved_bytes", "reserved"), ("context_bytes", "context"),
                ("peak_bytes", "peak"), ("inflight_micro_batches", "inflight"))
"""MemoryBreakdown field <- key of a rank's memory dict (`costmodel.step.memory.rank_memory`)."""


def _membreak(values: dict[str, Any], stage: int) -> MemoryBreakdown:
    """A MemoryBreakdown from one rank's memory values (valid by construction)."""
    fields = {name: float(values[key]) for name, key in _MEMORY_KEYS}
    return _construct(MemoryBreakdown, **fields, stage=int(stage), moment=PEAK_MOMENTS[int(values["moment"])])


def _stage_memory(state: dict[str, Any], pp: int) -> tuple[MemoryBreakdown, ...]:
    """Per-rank MemoryBreakdowns from per-rank arrays of memory values (the keys of `rank_memory`)."""
    cols = {key: np.broadcast_to(np.asarray(state[key]), (pp,)).tolist()
            for key in (*(key for _, key in _MEMORY_KEYS), "moment")}
    return tuple(_membreak({key: col[r] for key, col in cols.items()}, r) for r in range(pp))


def _closed_form_stage_memory(ctx: StepContext, k: Knobs, comm: Any, out: dict) -> tuple[MemoryBreakdown, ...]:
    """Memory of every pipeline rank, all ranks at once on arrays (`rank_state` without time); the end
    ranks are the ones `step_costs` already priced."""
    ranks = out["_ranks"]
    if k.pp <= 2:
        return tuple(_membreak(r, i) for i, r in enumerate(ranks))
    sh = ctx.shape
    enc, dec, embed, head = out["_units"]
    per_rank = sh.num_layers / k.pp
    rank = np.arange(k.pp)
    if sh.n_dec:
        n_dec = np.array([float(_cross_layers_on_rank(r, k.pp, k.v, sh.n_enc, sh.num_layers)) for r in range(k.pp)])
    else:
        n_dec = np.zeros(k.pp)
    n_enc = per_rank - n_dec
    params = n_enc * enc.params + n_dec * dec.params + (rank == 0) * embed.params + (rank == k.pp - 1) * head.params
    state = rank_state(ctx, k, comm, rank, out["num_micro_batches"], n_enc, n_dec, enc, dec, 0.0, 0.0, params,
                       with_time=False)
    return _stage_memory(state, k.pp)


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
                 events: tuple, gpu_profile: str | None = None,
                 memory_margin: float = MEMORY_SAFETY_MARGIN) -> StepEstimate:
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
        **{name: float(out[name]) for name, _ in _MEMORY_KEYS}, stage=int(out["peak_stage"]),
        moment=PEAK_MOMENTS[int(out["peak_moment"])])
    return _construct(StepEstimate,
        plan=plan, num_gpus=gpus, step_time_s=step, tokens_per_s=ctx.global_batch * ctx.seq_len / step,
        model_tflops_per_gpu=model_flops / per_gpu / 1e12, hardware_tflops_per_gpu=hw_flops / per_gpu / 1e12,
        mfu=model_flops / per_gpu / ctx.peak_flops_per_s, hfu=hw_flops / per_gpu / ctx.peak_flops_per_s,
        time=time, memory=memory, stage_memory=stage_mem, capacity_bytes=float(ctx.hbm_bytes),
        memory_margin=memory_margin, timeline=tuple(events),
        stack=ctx.stack.name if ctx.stack is not None else "megatron", gpu_profile=gpu_profile)

