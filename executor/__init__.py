"""paraplan executor: run a ParallelPlan for real with torch.distributed.

Public API (imported lazily, so `import executor` stays light):
- launch: `prepare_run`, `launch`, `run_plan`, `plan_unsupported`, `RunSetup`, `RunResult`, `RunFailed`, `host_capacity`,
  `scale_plan` - used by the `paraplan run` CLI and the UI; `prepare_launch`, `render_launch`, `write_launch`,
  `submit_launch`, `job_status` - a plan on a cluster (torchrun, Slurm, Kubernetes, Ray: `paraplan launch`).
- training pieces: `lr_at` (schedule), `BatchSource`/`load_corpus` (data), `save_checkpoint`,
  `load_checkpoint`, `latest_checkpoint`, `read_metrics`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "prepare_run": "launch", "launch": "launch", "run_plan": "launch", "plan_unsupported": "launch",
    "RunSetup": "launch",
    "RunResult": "launch", "RunFailed": "failures", "prepare_launch": "launch", "render_launch": "launch",
    "write_launch": "launch", "submit_launch": "launch", "job_status": "launch", "LaunchSpec": "launch", "host_capacity": "scaling", "scale_plan": "scaling",
    "lr_at": "train", "BatchSource": "data", "load_corpus": "data", "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint", "latest_checkpoint": "checkpoint", "read_metrics": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'executor' has no attribute {name!r}")
