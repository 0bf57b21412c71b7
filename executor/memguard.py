"""The memory guard before launch: predict what each process of a run will hold on the device it will use
and refuse a plan that does not fit, before any process starts.

- CUDA (this host has GPUs; a worker takes one each): the cost model's peak for this GPU with stack
  `paraplan` (reserved by the caching allocator + CUDA context and NCCL; `costmodel.step.memory`) against the
  GPU's memory less the planner's safety margin (`costmodel.MEMORY_SAFETY_MARGIN`).
- CPU (one Gloo process per 'GPU'): each process's tensors at their peak (the allocated bytes; a CPU has no
  caching allocator) plus what a worker holds before its model (`CPU_PROCESS_BASE_BYTES`), times the
  processes on this host, plus the torchrun agent, against the RAM available now (/proc/meminfo
  MemAvailable) less the same margin.
The nearest plan that fits comes from the planner, which the executor does not import: the caller passes a
`suggest(check)` callable (the CLI and the UI use `planner.nearest.nearest_plan_hint`)."""

from __future__ import annotations

import importlib.metadata
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from costmodel import (
    MEMORY_SAFETY_MARGIN,
    ClusterSpec,
    ModelSpec,
    ParallelPlan,
    StepEstimate,
    TrainingSpec,
    estimate,
    load_model,
    load_plan,
)

__all__ = ["CPU_PROCESS_BASE_BYTES", "MemoryCheck", "MemoryRefused", "available_ram_bytes", "predict_run_memory",
           "refuse_if_too_big", "guard_run", "default_global_batch", "default_seq_len"]

GIB = 2.0**30
CPU_PROCESS_BASE_BYTES = 0.5 * GIB
"""Resident memory of a CPU worker before its model: 0.32 GiB measured after importing torch 2.13 (CPU) and
the executor on this project's host, rounded up for Gloo's buffers and the data loader."""
GUARD_STACK = "paraplan"


def default_global_batch(plan: ParallelPlan, *, sequences: int = 8) -> int:
    """A run's global batch when none is given: `sequences` (8: a run on this machine), rounded up to whole
    micro-batches per DP rank (and to a multiple of pp micro-batches for interleaved 1F1B). Here, not in
    `executor.launch.settings` (which re-exports it), so the guard resolves a run's batch as the launcher does
    without importing the launcher."""
    unit = plan.dp * plan.micro_batch_size
    micro_batches = math.ceil(sequences / unit)
    if plan.schedule == "interleaved-1f1b":
        micro_batches = math.ceil(micro_batches / plan.pp) * plan.pp
    return unit * micro_batches


def default_seq_len(model: ModelSpec) -> int:
    """A run's sequence length when none is given: the model's maximum, at most 1024."""
    return min(model.max_seq_len, 1024)


def available_ram_bytes() -> float:
    """RAM available to new processes now: /proc/meminfo's MemAvailable, else free physical pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


@dataclass(frozen=True)
class MemoryCheck:
    """What the guard predicted for one host of a run."""

    device: str                  # 'cpu' or the CUDA device name
    processes: int               # worker processes on this host
    per_process_bytes: float     # predicted peak of one process (CPU: tensors + base)
    needed_bytes: float          # what must fit in `capacity_bytes` (CPU: every process + the agent)
    capacity_bytes: float        # CUDA: one GPU's memory; CPU: the RAM available
    margin: float
    estimate: StepEstimate
    cluster: ClusterSpec
    model: ModelSpec
    training: TrainingSpec

    @property
    def usable_bytes(self) -> float:
        return self.capacity_bytes * (1 - self.margin)

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.usable_bytes

    @property
    def per_process_capacity_bytes(self) -> float:
        """What one process may hold: a GPU's memory; on a CPU its share of the available RAM less the
        torchrun agent and the worker's own base (what the planner may give its tensors)."""
        if self.device != "cpu":
            return self.capacity_bytes
        return (self.capacity_bytes - CPU_PROCESS_BASE_BYTES) / self.processes - CPU_PROCESS_BASE_BYTES

    def describe(self) -> str:
        """'needs X GiB per process (at ...) x N processes = Y GiB, this host has Z GiB available RAM (...)'."""
        plan = self.estimate.plan.short()
        where = self.estimate.memory.describe()
        if self.device == "cpu":
            return (f"plan {plan} needs {self.per_process_bytes / GIB:.1f} GiB per process (predicted peak, {where}) "
                    f"x {self.processes} processes = {self.needed_bytes / GIB:.1f} GiB, this host has "
                    f"{self.capacity_bytes / GIB:.1f} GiB RAM available ({self.usable_bytes / GIB:.1f} GiB usable with "
                    f"the {self.margin:.0%} margin)")
        return (f"plan {plan} needs {self.needed_bytes / GIB:.1f} GiB per GPU (predicted peak, {where}), "
                f"{self.device} has {self.capacity_bytes / GIB:.1f} GiB ({self.usable_bytes / GIB:.1f} GiB usable with "
                f"the {self.margin:.0%} margin)")


class MemoryRefused(ValueError):
    """A run refused before launch because its predicted memory does not fit (one line; `check` has the numbers)."""

    def __init__(self, message: str, check: MemoryCheck) -> None:
        super().__init__(message)
        self.check = check


def _cpu_only_torch() -> bool:
    """Whether the installed torch is a CPU-only build ('+cpu' in its version): then there is no CUDA device
    to ask about, and torch need not be imported (seconds on a busy host)."""
    try:
        return "+cpu" in importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return True


def _host_processes() -> int:
    """Worker processes this host can hold (`executor.scaling.host_capacity`), without importing torch on a
    CPU-only build."""
    from .scaling import CPU_MIN_PROCESSES, CPU_PROCESSES_PER_CORE, host_capacity

    if _cpu_only_torch():
        return max(CPU_MIN_PROCESSES, CPU_PROCESSES_PER_CORE * (os.cpu_count() or 1))
    return host_capacity()


def _cuda_device() -> tuple[str, float, object] | None:
    """(name, total bytes, catalog GPUSpec or None) of this host's first CUDA device, or None without CUDA."""
    if _cpu_only_torch():
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    from .metrics import device_gpu_spec

    device = torch.device("cuda", 0)
    return (torch.cuda.get_device_name(device), float(torch.cuda.get_device_properties(device).total_memory),
            device_gpu_spec(device))


def _cluster(device: tuple | None, *, processes: int, nnodes: int) -> ClusterSpec:
    """The cost model's cluster of this run: `processes` 'GPUs' per node, the GPU's catalog entry with this
    device's memory (CPU: the `cpu` preset)."""
    from costmodel import get_cluster, get_gpu

    if device is None:
        base = get_cluster("cpu", nodes=1)
        return base.model_copy(update={"gpus_per_node": processes, "num_nodes": nnodes})
    name, total, spec = device
    gpu = (spec or get_gpu("h100-sxm").model_copy(update={"name": name})).model_copy(update={"hbm_bytes": total})
    base = get_cluster("dgx-h100", nodes=1)
    return base.model_copy(update={"gpu": gpu, "gpus_per_node": processes, "num_nodes": nnodes})


def predict_run_memory(model: ModelSpec, plan: ParallelPlan, training: TrainingSpec, *, processes: int,
                       nnodes: int = 1, dtype: str | None = None, margin: float = MEMORY_SAFETY_MARGIN) -> MemoryCheck:
    """The guard's prediction for this host (`processes` workers of the run on it); `dtype` is the run's
    --dtype (None: what the worker picks, bf16 on CUDA, fp32 on CPU)."""
    device = _cuda_device()
    dtype = "fp32" if device is None else (dtype or "bf16")
    training = training.model_copy(update={"stack": GUARD_STACK, "dtype": dtype})
    cluster = _cluster(device, processes=processes, nnodes=nnodes)
    est = estimate(model, cluster, training, plan, calibration=False, memory_margin=margin)
    if device is None:
        per_process = est.memory.allocated_bytes + CPU_PROCESS_BASE_BYTES
        return MemoryCheck("cpu", processes, per_process, processes * per_process + CPU_PROCESS_BASE_BYTES,
                           available_ram_bytes(), margin, est, cluster, model, training)
    return MemoryCheck(device[0], processes, est.memory.peak_bytes, est.memory.peak_bytes, device[1], margin, est,
                       cluster, model, training)


def refuse_if_too_big(model: ModelSpec, plan: ParallelPlan, training: TrainingSpec, *, processes: int,
                      nnodes: int = 1, dtype: str | None = None,
                      suggest: Callable[[MemoryCheck], str] | None = None) -> MemoryCheck:
    """The check; raises MemoryRefused (one line: the predicted peak, the capacity, the nearest plan that fits
    from `suggest`, and `--force`) when the run does not fit."""
    check = predict_run_memory(model, plan, training, processes=processes, nnodes=nnodes, dtype=dtype)
    if check.fits:
        return check
    hint = suggest(check) if suggest is not None else ""
    raise MemoryRefused(f"memory: {check.describe()}{'; ' + hint if hint else ''}; pass --force to run anyway",
                        check)


def guard_run(plan_file: str | os.PathLike[str], *, model: str, global_batch: int | None, seq_len: int | None,
              dtype: str | None, nnodes: int = 1,
              suggest: Callable[[MemoryCheck], str] | None = None) -> MemoryCheck | None:
    """`refuse_if_too_big` for a plan file and the run's flags as `prepare_run` resolves them (no resume, no
    scaling), without importing the launcher: `paraplan run` calls it first, so a plan that cannot fit is
    refused in about the time the cost model takes. None (nothing checked) when the process count is one
    `prepare_run` refuses anyway."""
    plan = load_plan(plan_file)
    spec = load_model(model)
    if nnodes < 1 or plan.world_size % nnodes or plan.world_size // nnodes > _host_processes():
        return None   # prepare_run explains what is wrong with the process count
    training = TrainingSpec(global_batch_size=global_batch or default_global_batch(plan),
                            seq_len=seq_len or default_seq_len(spec), dtype=dtype or "fp32")
    return refuse_if_too_big(spec, plan, training, processes=plan.world_size // nnodes, nnodes=nnodes, dtype=dtype,
                             suggest=suggest)
