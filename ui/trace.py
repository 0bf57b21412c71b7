"""A run's measured step, read from the torch.profiler traces its ranks wrote (`executor.trace`:
`<run>/trace/rank<R>.json`), in the simulated timeline's vocabulary so the two draw alike.

Per rank, the profiled step (the `paraplan:step` range) is cut into intervals on the rank's main thread:
`gloo:send` / `gloo:recv` -> send / recv, `gloo:all_reduce` and other collectives -> dp_comm, the
`paraplan:optimizer` range -> optimizer, autograd's backward ops (`autograd::engine::...`) -> bwd,
other ops -> fwd. Neighbouring intervals of one kind closer than `merge_gap_frac` of the step merge, so a
step of thousands of ops becomes a readable bar per phase. Collectives run by background threads (DDP's
bucketed all-reduce) form a second lane of the rank; on a GPU its kernels form a third ('(GPU)': NCCL
kernels by collective, the others by the CPU interval that launched them). Memory over the step is the
allocator's running total from the trace's `[memory]` events (CPU allocator on CPU runs, CUDA on GPUs)."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["MeasuredStep", "read_rank", "read_run_trace", "classify", "trace_files"]

_COMM = ("gloo:", "nccl:", "c10d::")


@dataclass(frozen=True)
class MeasuredStep:
    """Intervals (`lane`, `rank`, `kind`, `start_ms`, `end_ms`, `duration_ms`) and memory samples (`rank`,
    `time_ms`, `allocated_bytes`) of the profiled step, times from the step's start."""

    events: pd.DataFrame
    memory: pd.DataFrame
    step_ms: float


def classify(name: str, *, in_optimizer: bool) -> str:
    """The timeline kind of one traced op (see the module docstring)."""
    low = name.lower()
    if "send" in low and low.startswith(_COMM):
        return "send"
    if "recv" in low and low.startswith(_COMM):
        return "recv"
    if low.startswith(_COMM):
        return "dp_comm"
    if in_optimizer:
        return "optimizer"
    if name.startswith("autograd::engine"):
        return "bwd"
    return "fwd"


def trace_files(run_dir: str | Path) -> dict[int, Path]:
    """rank -> trace file of a run (empty when the run was not traced)."""
    folder = Path(run_dir) / "trace"
    out = {}
    for path in sorted(folder.glob("rank*.json")):
        digits = path.stem[4:]
        if digits.isdigit():
            out[int(digits)] = path
    return out


def _top_level(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events not nested in an earlier one (same thread, sorted by start)."""
    out: list[dict[str, Any]] = []
    end = -1.0
    for e in sorted(events, key=lambda e: (e["ts"], -e.get("dur", 0.0))):
        if e["ts"] >= end:
            out.append(e)
            end = e["ts"] + e.get("dur", 0.0)
    return out


def _merge(rows: list[dict[str, Any]], gap_ms: float) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for r in rows:
        last = merged[-1] if merged else None
        if last is not None and last["kind"] == r["kind"] and r["start_ms"] - last["end_ms"] <= gap_ms:
            last["end_ms"] = max(last["end_ms"], r["end_ms"])
        else:
            merged.append(dict(r))
    for r in merged:
        r["duration_ms"] = r["end_ms"] - r["start_ms"]
    return merged


def read_rank(path: str | Path, *, rank: int, lane: str | None = None, merge_gap_frac: float = 0.005,
              max_memory_points: int = 400) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Intervals, memory samples and the step's length (ms) of one rank's trace file."""
    data = json.loads(Path(path).read_text())
    events = data.get("traceEvents", []) if isinstance(data, dict) else []
    step = next((e for e in events if e.get("ph") == "X" and e.get("name") == "paraplan:step"), None)
    if step is None:
        raise ValueError(f"{path}: no 'paraplan:step' range; not a trace written by executor.trace")
    t0, t1, main = float(step["ts"]), float(step["ts"]) + float(step["dur"]), step.get("tid")
    inside = [e for e in events if e.get("ph") == "X" and t0 <= float(e.get("ts", -1)) <= t1
              and e is not step and "dur" in e]
    optim = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in inside
             if e.get("name") == "paraplan:optimizer"]
    label = lane or f"rank {rank}"
    rows, comm_rows = [], []
    for thread_main in (True, False):
        chosen = [e for e in inside if (e.get("tid") == main) == thread_main
                  and not str(e.get("name", "")).startswith("paraplan:")
                  and (thread_main or str(e.get("name", "")).lower().startswith(_COMM))]
        for e in _top_level(chosen):
            start = float(e["ts"])
            kind = classify(str(e["name"]), in_optimizer=any(a <= start <= b for a, b in optim))
            row = {"lane": label if thread_main else f"{label} (comm thread)", "rank": rank, "kind": kind,
                   "start_ms": (start - t0) / 1e3, "end_ms": (start + float(e["dur"]) - t0) / 1e3}
            (rows if thread_main else comm_rows).append(row)
    gpu_rows = _gpu_rows(events, rows, t0=t0, main=main, lane=f"{label} (GPU)", rank=rank)
    t_end = max([t1] + [t0 + r["end_ms"] * 1e3 for r in gpu_rows])  # kernels may finish after the CPU range
    step_ms = (t_end - t0) / 1e3
    gap = merge_gap_frac * step_ms
    intervals = _merge(rows, gap) + _merge(comm_rows, gap) + _merge(gpu_rows, gap)
    mem = [e for e in events if e.get("name") == "[memory]" and e.get("tid") == main
           and t0 <= float(e.get("ts", -1)) <= t_end]
    cuda = [e for e in mem if e.get("args", {}).get("Device Type") == 1]
    mem = cuda or mem  # the GPU's allocator when a GPU ran
    samples = [{"rank": rank, "lane": label, "time_ms": (float(e["ts"]) - t0) / 1e3,
                "allocated_bytes": float(e["args"].get("Total Allocated", 0.0))} for e in mem]
    if len(samples) > max_memory_points:  # keep every k-th sample and the peak
        k = -(-len(samples) // max_memory_points)
        peak = max(range(len(samples)), key=lambda i: samples[i]["allocated_bytes"])
        samples = [s for i, s in enumerate(samples) if i % k == 0 or i == peak]
    return intervals, samples, step_ms


def _gpu_rows(events: list[dict[str, Any]], cpu_rows: list[dict[str, Any]], *, t0: float, main: Any, lane: str,
              rank: int) -> list[dict[str, Any]]:
    """GPU kernels of the step (a CUDA run), in the same kinds: NCCL kernels by their collective, other
    kernels by the CPU interval that launched them (the launch's `correlation` id)."""
    kernels = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
               and float(e.get("ts", -1)) >= t0]
    if not kernels:
        return []
    launched: dict[Any, float] = {e["args"]["correlation"]: float(e["ts"]) for e in events
                                  if e.get("cat") == "cuda_runtime" and e.get("tid") == main
                                  and "correlation" in e.get("args", {})}
    starts = [t0 + r["start_ms"] * 1e3 for r in cpu_rows]
    out = []
    for e in sorted(kernels, key=lambda e: float(e["ts"])):
        name = str(e.get("name", ""))
        low = name.lower()
        if "nccl" in low:
            kind = "recv" if "recv" in low and "send" not in low else "send" if "send" in low else "dp_comm"
        else:
            at = launched.get(e.get("args", {}).get("correlation"))
            i = bisect.bisect_right(starts, at) - 1 if at is not None else -1
            kind = cpu_rows[i]["kind"] if i >= 0 and cpu_rows[i]["kind"] in ("fwd", "bwd", "optimizer") else "fwd"
        start = float(e["ts"])
        out.append({"lane": lane, "rank": rank, "kind": kind, "start_ms": (start - t0) / 1e3,
                    "end_ms": (start + float(e.get("dur", 0.0)) - t0) / 1e3})
    return out


def read_run_trace(run_dir: str | Path, *, lanes: dict[int, str] | None = None) -> MeasuredStep | None:
    """Every rank's profiled step of a run (None when the run has no trace). `lanes` names each rank's
    lane (e.g. 'stage 1 · rank 3'); default 'rank R'."""
    files = trace_files(run_dir)
    if not files:
        return None
    intervals, samples, steps = [], [], []
    for rank, path in files.items():
        rows, mem, step_ms = read_rank(path, rank=rank, lane=(lanes or {}).get(rank))
        intervals += rows
        samples += mem
        steps.append(step_ms)
    events = pd.DataFrame(intervals, columns=["lane", "rank", "kind", "start_ms", "end_ms", "duration_ms"])
    memory = pd.DataFrame(samples, columns=["rank", "lane", "time_ms", "allocated_bytes"])
    return MeasuredStep(events=events, memory=memory, step_ms=max(steps))
