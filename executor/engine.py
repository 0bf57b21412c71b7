"""`build_engine`: the model of a `ModelSpec` with a `ParallelPlan` applied, its optimizer, and
`Engine.train_step` (micro-batching, forward/backward or the pipeline schedule, global grad-norm
clipping, AdamW). With one process the same code is the single-process reference.

Loss scaling: every micro-batch's summed token loss is multiplied by dp*cp / N, where N is the number of
target tokens (targets != -100) in the whole global batch. DDP/FSDP average gradients over the dp x cp
replicas (context-parallel ranks each sum the loss of their share of the tokens), so the accumulated
gradient is exactly d(mean token loss over the global batch)/dw on every plan."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import loss_parallel
from torch.nn.parallel import DistributedDataParallel

from costmodel.specs import ModelSpec, ParallelPlan, TrainingSpec
from costmodel.specs.optimizer import ADAMW_WEIGHT_DECAY
from costmodel.step.checks import check_plan
from costmodel.step.runnable import dtype_problem, executor_problems

from .compile import apply_compile, async_tp_applies, compile_unsupported, default_compile, enable_async_tp
from .context_parallel import apply_cp, shard_sequence
from .expert_parallel import apply_experts
from .families import build_model
from .float8 import apply_float8, float8_unsupported
from .grads import align_grads_, clip_grad_norm_
from .init import init_weights
from .mesh import axis_group, axis_rank, axis_size, build_mesh, expert_replica_mesh, replica_mesh
from .model import IGNORE_INDEX
from .moe import set_aux_loss_scale
from .optim import ADAM_BETAS, ADAM_EPS, adamw_kernel, build_optimizer
from .parallelize import apply_ddp, apply_fsdp, apply_recompute, apply_tp, uses_ddp, uses_fsdp
from .pipeline import build_schedule, build_stages, split_model
from .t5 import apply_t5_tp
from .trace import phase

__all__ = ["Engine", "build_engine", "check_executor_plan", "compute_dtype", "uses_loss_parallel", "ADAM_BETAS",
           "ADAM_EPS"]


def compute_dtype(training: TrainingSpec, device: torch.device) -> torch.dtype:
    """The autocast dtype: on CUDA bf16 when asked (also around fp8 matmuls), fp32 for fp32, and a
    ValueError for what the executor does not train there (fp16; bf16 on a GPU without it,
    `costmodel.step.runnable.dtype_problem`). On CPU fp32 whatever the spec says (losses compared with
    the single process at 1e-5; `prepare_run` refuses an explicit other dtype there)."""
    if device.type != "cuda":
        return torch.float32
    if problem := dtype_problem(training.dtype, "cuda"):
        raise problem
    if training.dtype in ("bf16", "fp8"):
        if not torch.cuda.is_bf16_supported():
            raise ValueError(f"dtype: {torch.cuda.get_device_name(device)} has no bf16; use --dtype fp32")
        return torch.bfloat16
    return torch.float32


class Engine:
    """This rank's share of the model, its optimizer and the step. Build with `build_engine`."""

    def __init__(self, *, spec: ModelSpec, plan: ParallelPlan, training: TrainingSpec, mesh: DeviceMesh | None,
                 device: torch.device, model_parts: list[nn.Module], run_parts: list[nn.Module],
                 stages: list | None, optimizer: torch.optim.Optimizer, dtype: torch.dtype,
                 settings: dict[str, object] | None = None) -> None:
        self.spec, self.plan, self.training, self.mesh, self.device = spec, plan, training, mesh, device
        self.model_parts = model_parts
        self.optimizer = optimizer
        self.dp_rank, self.dp_size = axis_rank(mesh, "dp"), axis_size(mesh, "dp")
        self.cp_rank, self.cp_size = axis_rank(mesh, "cp"), axis_size(mesh, "cp")
        self.pp_rank = axis_rank(mesh, "pp")
        self.dtype = dtype
        self.settings = dict(settings or {})  # what build_engine applied for speed (compile, fp8, ...)
        self._run_parts = run_parts  # model_parts, DDP-wrapped where DDP applies
        self._stages = stages
        self._schedule = None if stages is None else build_schedule(
            stages, plan, n_microbatches=self.local_batch_size // plan.micro_batch_size, loss_fn=self._loss_fn)
        self._scale = 1.0
        self._loss_sums: list[torch.Tensor] = []
        self._params = [p for part in model_parts for p in part.parameters()]
        self.grad_norm = 0.0   # the last step's global gradient norm before clipping

    @property
    def local_batch_size(self) -> int:
        """Rows of the global batch this rank's DP slice holds: global_batch / dp."""
        return self.training.global_batch_size // self.dp_size

    def _loss_fn(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce_sum = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                                 reduction="sum")
        # loss_parallel gives a DTensor replicated over the 1-D TP mesh: its local value is the full sum
        self._loss_sums.append(ce_sum.detach().to_local() if isinstance(ce_sum, DTensor) else ce_sum.detach())
        return ce_sum * self._scale

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.mesh is None:
            return t
        if dist.get_backend() == "nccl":
            t = t.to(self.device)
        dist.all_reduce(t)
        return t.cpu()

    def _autocast(self) -> contextlib.ExitStack:
        """Mixed precision (autocast unless FSDP2's policy casts) and torch's loss-parallel context."""
        stack = contextlib.ExitStack()
        if self.dtype != torch.float32 and not uses_fsdp(self.plan):
            stack.enter_context(torch.autocast(self.device.type, dtype=self.dtype))
        if uses_loss_parallel(self.plan):
            stack.enter_context(loss_parallel())
        return stack

    def _micro_batches(self, tokens: torch.Tensor, targets: torch.Tensor) -> Iterator[tuple]:
        mb = self.plan.micro_batch_size
        yield from zip(tokens.split(mb), targets.split(mb), strict=True)

    def _sync_context(self, last: bool) -> contextlib.AbstractContextManager:
        """Reduce DP gradients on the last micro-batch only (DDP no_sync; FSDP replicate-style plans)."""
        run = self._run_parts[0]
        if isinstance(run, DistributedDataParallel) and not last:
            return run.no_sync()
        if isinstance(run, FSDPModule) and self.plan.zero_stage < 2:
            run.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def _forward_backward(self, tokens: torch.Tensor, targets: torch.Tensor) -> None:
        if self._stages is None:
            n = tokens.shape[0] // self.plan.micro_batch_size
            for i, (x, y) in enumerate(self._micro_batches(tokens, targets)):
                with self._sync_context(i == n - 1), self._autocast():
                    with phase(f"forward {i}"):  # labels in a profiled step (executor.trace)
                        loss = self._loss_fn(self._run_parts[0](x), y)
                    with phase(f"backward {i}"):
                        loss.backward()
            return
        first = any(s.is_first for s in self._stages)
        last = any(s.is_last for s in self._stages)
        with self._autocast():
            self._schedule.step(*([tokens] if first else []), target=targets if last else None)
        # The schedule's first step also calls loss_fn for shape inference: keep the real micro-batches.
        self._loss_sums = self._loss_sums[len(self._loss_sums) - self.local_batch_size // self.plan.micro_batch_size:]

    def _check_batch(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both on the device, after checking [rows, seq] shapes (encoder-decoders: tokens [rows, 2*seq])."""
        width = 2 * targets.shape[-1] if self.spec.arch == "encoder-decoder" else targets.shape[-1]
        if targets.ndim != 2 or tokens.shape != (targets.shape[0], width):
            raise ValueError(f"tokens/targets: need [rows, {width}] tokens for [rows, seq] targets, got "
                             f"{tuple(tokens.shape)} and {tuple(targets.shape)}")
        if tokens.shape[0] != self.local_batch_size:
            raise ValueError(f"tokens: this rank feeds global_batch_size/dp={self.local_batch_size} rows, "
                             f"got {tokens.shape[0]}")
        return tokens.to(self.device), targets.to(self.device)

    def _target_count(self, targets: torch.Tensor) -> int:
        """Target tokens in the global batch: each is counted by tp*pp*cp ranks holding the same rows."""
        count = self._all_reduce((targets != IGNORE_INDEX).sum().cpu().to(torch.int64))
        return int(count) // (self.plan.tp * self.plan.pp * self.plan.cp)

    def train_step(self, tokens: torch.Tensor, targets: torch.Tensor, *, lr: float,
                   max_grad_norm: float = 1.0) -> float:
        """One optimizer step on this DP rank's rows [global_batch/dp, seq] (int64); returns the mean
        token loss over the whole global batch, the same on every rank."""
        tokens, targets = self._check_batch(tokens, targets)
        count = self._target_count(targets)
        self._scale = self.dp_size * self.cp_size / max(count, 1)   # gradients are averaged over dp x cp
        self._loss_sums = []
        # context parallelism: this rank's chunks of every sequence (executor.context_parallel)
        tokens, targets = (shard_sequence(t, self.cp_size, self.cp_rank) for t in (tokens, targets))
        self._forward_backward(tokens, targets)
        with phase("optimizer"):
            align_grads_(self._params)
            self.grad_norm = clip_grad_norm_(self._params, max_grad_norm, pp_group=axis_group(self.mesh, "pp"))
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        local = torch.stack(self._loss_sums).double().sum().cpu() if self._loss_sums else torch.zeros((),
                                                                                                      dtype=torch.float64)
        total = self._all_reduce(local.reshape(1))  # last-stage ranks hold sums: tp copies, cp shares
        return float(total) / self.plan.tp / max(count, 1)


    @torch.no_grad()
    def eval_loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
        """(summed token loss, target tokens) of a global batch, forward only, the same on every rank;
        under pipelining the schedule's forward-only `eval` path runs it."""
        tokens, targets = self._check_batch(tokens, targets)
        count = self._target_count(targets)
        self._loss_sums = []
        tokens, targets = (shard_sequence(t, self.cp_size, self.cp_rank) for t in (tokens, targets))
        self._forward_only(tokens, targets, logits=False)
        sums = self._loss_sums[len(self._loss_sums) - self.local_batch_size // self.plan.micro_batch_size:]
        local = torch.stack(sums).double().sum().cpu() if sums else torch.zeros((), dtype=torch.float64)
        return float(self._all_reduce(local.reshape(1))) / self.plan.tp, count   # tp copies, cp shares

    @torch.no_grad()
    def predict(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Greedy ids [rows, seq] (argmax of the logits) of this DP rank's rows, on every rank: a
        pipeline's last stage broadcasts them over the pipeline group."""
        if self.cp_size > 1:
            raise ValueError("cp: greedy decoding gathers whole sequences; decode with cp=1")
        tokens, targets = self._check_batch(tokens, targets)
        logits = self._forward_only(tokens, targets)
        pred = torch.empty(targets.shape, dtype=torch.int64, device=self.device)
        if logits is not None:
            pred = (logits.full_tensor() if isinstance(logits, DTensor) else logits).argmax(dim=-1)
        if self._stages is not None:
            group = axis_group(self.mesh, "pp")
            dist.broadcast(pred, src=dist.get_global_rank(group, self.plan.pp - 1), group=group)
        return pred

    def _forward_only(self, tokens: torch.Tensor, targets: torch.Tensor, *, logits: bool = True
                      ) -> torch.Tensor | None:
        """The micro-batches' loss sums into `_loss_sums`; with `logits`, the logits of this rank's rows
        (None on ranks without the last pipeline stage)."""
        with self._autocast():
            if self._stages is not None:
                first = any(s.is_first for s in self._stages)
                last = any(s.is_last for s in self._stages)
                return self._schedule.eval(*([tokens] if first else []), target=targets if last else None,
                                           return_outputs=logits)
            kept = []
            for x, y in self._micro_batches(tokens, targets):
                out = self._run_parts[0](x)
                self._loss_fn(out, y)
                if logits:
                    kept.append(out)
            return torch.cat(kept) if logits else None


def check_executor_plan(model_spec: ModelSpec, plan: ParallelPlan, training: TrainingSpec, *,
                        device: torch.device) -> None:
    """ValueError (field: fix) for what the executor cannot run on `device`: the rules of
    `costmodel.step.runnable`, which the planner applies to its output too."""
    problems = executor_problems(plan, device="cuda" if device.type == "cuda" else "cpu", model=model_spec,
                                 seq_len=training.seq_len, global_batch=training.global_batch_size)
    if problems:
        raise problems[0]

def uses_loss_parallel(plan: ParallelPlan) -> bool:
    """Vocab-parallel cross-entropy (torch `loss_parallel`) with TP; pipeline stages exchange plain
    tensors, so plans with PP gather the logits instead."""
    return plan.tp > 1 and plan.pp == 1


def build_engine(model_spec: ModelSpec, plan: ParallelPlan, training: TrainingSpec, *,
                 device: torch.device, seed: int = 0, lr: float = 3e-4, weight_decay: float = ADAMW_WEIGHT_DECAY,
                 mesh: DeviceMesh | None = None, compile: bool | None = None) -> Engine:
    """Build the mesh (unless given) over the initialized default process group, the model on the meta
    device, apply the plan (PP split -> fp8 linears -> TP/SP -> CP -> experts -> recompute -> compile per
    block -> FSDP over the dp x cp replicas; materialize; deterministic init from `seed`, the same weights
    as the single-process model; DDP), and AdamW. `compile` None compiles on CUDA and not on CPU
    (`executor.compile.default_compile`)."""
    device = torch.device(device)
    check_plan(model_spec, None, training, plan)
    check_executor_plan(model_spec, plan, training, device=device)   # costmodel.step.runnable's rules
    float8 = training.dtype == "fp8"
    if float8 and (reason := float8_unsupported(device)):
        raise ValueError(reason)
    compile = default_compile(device, plan) if compile is None else bool(compile)
    if compile and (reason := compile_unsupported(plan)):
        raise ValueError(reason)
    mesh = mesh if mesh is not None else build_mesh(plan, device_type=device.type)
    replicas = replica_mesh(mesh, plan)  # dp x cp: the ranks holding the same weights
    dtype = compute_dtype(training, device)
    async_tp = async_tp_applies(plan, device, compiled=compile)
    if async_tp:
        enable_async_tp(mesh["tp"])
    model = build_model(model_spec, device="meta")
    model_parts, run_parts, ids = [], [], []
    for stage, part in split_model(model, plan, pp_rank=axis_rank(mesh, "pp")):
        if float8:  # 0. fp8 linears (torchao), on the meta model like torchtitan's converters
            apply_float8(part)
        if plan.tp > 1:  # 1. tensor (+ sequence) parallel
            tp = apply_t5_tp if model_spec.arch == "encoder-decoder" else apply_tp
            tp(part, mesh["tp"], sequence_parallel=plan.sequence_parallel, loss_parallel=uses_loss_parallel(plan))
        if plan.cp > 1:  # context parallel: global positions, CP attention core
            apply_cp(part, plan, mesh, seq_len=training.seq_len, device=device)
        apply_experts(part, mesh, plan)  # MoE layers: experts over the EP and TP groups
        # 2. activation checkpointing per block (zero-bubble recomputes each region twice)
        apply_recompute(part, plan.recompute, split_backward=plan.pp > 1 and plan.schedule == "zero-bubble")
        if compile:  # 3. torch.compile per block, after TP and recompute, before FSDP (torchtitan's order)
            apply_compile(part)
        if uses_fsdp(plan):  # 4. FSDP2 fully_shard or replicate (see dp_wrapper), over dp x cp
            apply_fsdp(part, plan, replicas, param_dtype=dtype, expert_mesh=expert_replica_mesh(mesh, plan))
        part.to_empty(device=device)  # 5. materialize, same values on every plan
        init_weights(part, model_spec, seed=seed)
        model_parts.append(part)
        ids.append(stage)
        # 6. DDP (ZeRO-0/1 without TP) wraps the real parameters
        run_parts.append(apply_ddp(part, replicas.get_group(), device=device) if uses_ddp(plan) else part)
    stages = None
    if plan.pp > 1:
        stages = build_stages(list(zip(ids, run_parts, strict=True)), plan, device=device,
                              group=axis_group(mesh, "pp"))
    params = [p for part in model_parts for p in part.parameters()]
    # an MoE layer's auxiliary loss per sequence, scaled as the token loss: gradients average over dp x cp
    set_aux_loss_scale(model_parts, axis_size(mesh, "dp") * axis_size(mesh, "cp") / training.global_batch_size)
    optimizer = build_optimizer(params, plan, replicas, lr=lr, weight_decay=weight_decay, device=device)
    settings = {"compile": compile, "float8": float8, "async_tp": async_tp,
                "optimizer": "fused" if adamw_kernel(device).get("fused") else "foreach"}
    return Engine(spec=model_spec, plan=plan, training=training, mesh=mesh, device=device,
                  model_parts=model_parts, run_parts=run_parts, stages=stages, optimizer=optimizer, dtype=dtype,
                  settings=settings)
