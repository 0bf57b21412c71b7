"""A measured trace of one training step: torch.profiler on every rank (CPU ops, CUDA kernels when a GPU
runs, and the allocator's memory events), written as a Chrome trace to `<out>/trace/rank<R>.json`.

The training loop profiles the step `--trace-step N` names (default off; `paraplan run --trace-step N`
sets it through `PARAPLAN_TRACE_STEP`, which torchrun passes to its workers). That step is marked
`traced` in metrics.jsonl and left out of the step-time median (the profiler slows it down). The app
reads the files back (`ui.trace`) and draws them under the simulated timeline, rank by rank, with
memory over the step. Sources: torch.profiler (`profile(activities=..., profile_memory=True)`,
`export_chrome_trace`); the pipeline schedules label their actions ("PP:...", "Forward i",
"Backward i"), and the engine labels the rest (`phase`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

__all__ = ["TRACE_DIRNAME", "TRACE_ENV", "trace_step_from_env", "step_trace", "phase"]

TRACE_DIRNAME = "trace"
TRACE_ENV = "PARAPLAN_TRACE_STEP"


def trace_step_from_env() -> int:
    """The step to trace from `PARAPLAN_TRACE_STEP` (0: none); a malformed value is a ValueError."""
    raw = os.environ.get(TRACE_ENV, "").strip()
    if not raw:
        return 0
    try:
        step = int(raw)
    except ValueError:
        raise ValueError(f"{TRACE_ENV}={raw!r}: must be a step number (0 = no trace)") from None
    if step < 0:
        raise ValueError(f"{TRACE_ENV}={step}: must be >= 0")
    return step


def phase(name: str) -> contextlib.AbstractContextManager:
    """A labelled range in the trace ('paraplan:<name>'); costs about a microsecond when not profiling."""
    return record_function(f"paraplan:{name}")


@contextlib.contextmanager
def step_trace(out: str | os.PathLike[str], *, rank: int, device: torch.device) -> Iterator[None]:
    """Profile the enclosed step and write `<out>/trace/rank<R>.json` (atomically: temp file + rename)."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    folder = Path(out) / TRACE_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    with profile(activities=activities, profile_memory=True, record_shapes=False, with_stack=False) as prof:
        with phase("step"):
            yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    tmp = folder / f".rank{rank}.json.tmp"
    prof.export_chrome_trace(str(tmp))
    os.replace(tmp, folder / f"rank{rank}.json")
