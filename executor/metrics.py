"""Per-step training metrics: FLOPs, MFU against the device's peak, peak memory, JSON-lines output and the
final `StepMeasurement` summary.

MFU follows Chowdhery et al. 2022 (PaLM), Appendix B: model FLOPs per token = 6*N + 12*L*H*Q*T, with N the
matrix-multiply parameters (embedding lookups excluded), recomputation not counted. When the cost model's
FLOPs counter (`costmodel.layer.flops`) is present it is used instead, so measured and predicted MFU agree.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from costmodel import GPUSpec, ModelSpec, ParallelPlan, StepMeasurement, TrainingSpec, get_gpu, list_gpus
from costmodel.atomic import write_text_atomic
from costmodel.specs import ValidationResult

__all__ = [
    "matmul_params", "model_flops_per_step", "device_gpu_spec", "MemoryTracker", "MetricsWriter",
    "read_metrics", "summarize", "write_json_atomic",
]


def matmul_params(model: ModelSpec) -> int:
    """Parameters that take part in matrix multiplies: attention and MLP weights of every block plus the
    output projection (the input embedding is a lookup; tied embeddings still multiply at the output)."""
    h, d = model.hidden_size, model.kv_channels
    attn = h * model.num_heads * d * 2 + h * model.kv_heads * d * 2  # q, o and k, v
    mlp = h * model.ffn_size * (3 if model.gated_mlp else 2)
    return model.total_layers * (attn + mlp) + model.vocab_size * h


def model_flops_per_step(model: ModelSpec, training: TrainingSpec) -> float:
    """Model FLOPs of one optimizer step (forward + backward, no recompute): the cost model's counter
    (Narayanan et al. 2021, sec. 5.1) so measured and predicted MFU agree; PaLM's 6N + 12LHQT per token
    when that counter is unavailable."""
    try:
        from costmodel.layer.flops import step_flops
        from costmodel.layer.params import model_shape

        model_flops, _ = step_flops(model_shape(model), training.global_batch_size, training.seq_len, 0)
        return float(model_flops)
    except ImportError:
        tokens = training.global_batch_size * training.seq_len
        per_token = 6 * matmul_params(model) + 12 * model.total_layers * model.num_heads \
            * model.kv_channels * training.seq_len
        return float(per_token * tokens)


def device_gpu_spec(device: torch.device) -> GPUSpec | None:
    """The catalog entry for `device`: 'cpu' for CPUs, else the GPU whose catalog name matches the CUDA
    device name (e.g. 'NVIDIA H100 80GB HBM3' -> h100-sxm); None when unknown (MFU is then not reported)."""
    if device.type != "cuda":
        return get_gpu("cpu")
    name = torch.cuda.get_device_name(device).lower().replace(" ", "").replace("-", "")
    mem_gb = torch.cuda.get_device_properties(device).total_memory / 1e9
    best: GPUSpec | None = None
    for key in list_gpus():
        family = key.split("-")[0]
        if family == "cpu" or family not in name:
            continue
        spec = get_gpu(key)
        # prefer the variant whose memory size is closest (A100 40 GB vs 80 GB)
        if best is None or abs(spec.hbm_bytes / 1e9 - mem_gb) < abs(best.hbm_bytes / 1e9 - mem_gb):
            best = spec
    return best


def _rss_high_water_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def _proc_status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in bytes; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_rss_high_water() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status_bytes("VmHWM") is not None


class MemoryTracker:
    """Peak memory of this process: the CUDA caching allocator's high-water mark on GPUs; on CPU the rise
    of the resident-set high-water mark since `start()` (model, optimizer states, activations, buffers).
    On Linux `start()` resets the kernel's high-water mark, so an earlier, larger peak of the same process
    does not hide this one; elsewhere the lifetime high-water mark is used."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._baseline_bytes = 0
        self._proc = False

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self._proc = _reset_rss_high_water()
        self._baseline_bytes = (_proc_status_bytes("VmRSS") or 0) if self._proc else _rss_high_water_bytes()

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        high = (_proc_status_bytes("VmHWM") or 0) if self._proc else _rss_high_water_bytes()
        return max(0, high - self._baseline_bytes)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write `data` as JSON atomically (temp file + rename), so readers never see half a file."""
    return write_text_atomic(path, json.dumps(data, indent=2))


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a torn last line from a killed run is skipped)."""
    out = []
    path = Path(path)
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class MetricsWriter:
    """Appends one JSON object per step to `metrics.jsonl` (only the writer rank creates one)."""

    def __init__(self, path: str | os.PathLike[str], *, resume_step: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # after a resume, drop the records of steps that are about to be re-run
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def summarize(records: Iterable[dict[str, Any]], *, plan: ParallelPlan, model_name: str, device_name: str,
              backend: str, world_size: int, training: TrainingSpec, flops_per_step: float,
              peak_flops_per_s: float | None, peak_bytes: float, warmup_steps: int = 1,
              history: Iterable[dict[str, Any]] | None = None) -> StepMeasurement:
    """A `StepMeasurement` from per-step records: median step time over the steps after `warmup_steps`
    (all steps when the run is shorter; a profiled step, `traced`, is left out), throughput, achieved
    TFLOP/s per GPU and MFU, and the validation results of the records that carry them (`val_*` fields,
    executor.evaluate). `losses` and `step_times_s` list every step of the run: `history` (the run
    directory's metrics.jsonl, which keeps the steps before a resume) when given, else `records`."""
    records = list(records)
    history = list(history) if history is not None else records
    after = records[warmup_steps:] if len(records) > warmup_steps else records
    measured = [r["step_time_s"] for r in after if not r.get("traced")] or [r["step_time_s"] for r in after]
    step_time_s = statistics.median(measured) if measured else 0.0
    tokens = training.global_batch_size * training.seq_len
    tflops = flops_per_step / step_time_s / world_size / 1e12 if step_time_s > 0 else 0.0
    mfu = tflops * 1e12 / peak_flops_per_s if peak_flops_per_s and step_time_s > 0 else None
    return StepMeasurement(
        plan=plan, model=model_name, device=device_name, backend=backend,  # type: ignore[arg-type]
        world_size=world_size, steps=len(history), global_batch_size=training.global_batch_size,
        seq_len=training.seq_len, step_time_s=step_time_s,
        tokens_per_s=tokens / step_time_s if step_time_s > 0 else 0.0,
        peak_bytes=float(peak_bytes), achieved_tflops_per_gpu=tflops, mfu=mfu,
        losses=tuple(float(r["loss"]) for r in history), step_times_s=tuple(float(r["step_time_s"]) for r in history),
        validation=tuple(ValidationResult(step=r["step"], **{k.removeprefix("val_"): v for k, v in r.items()
                                                             if k.startswith("val_")})
                         for r in history if "val_loss" in r),
    )
