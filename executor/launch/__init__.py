"""Launching a plan: on this machine (`local`: torchrun, what `paraplan run` does) and where GPU clusters
are (`torchrun` on several nodes, `slurm`, `kubernetes`, `ray`), each turning the plan into what its
scheduler needs, sized from the plan (`spec.prepare_launch`), written atomically and submitted (`jobs`).

    from executor.launch import prepare_run, launch                              # here
    from executor.launch import prepare_launch, write_launch, submit_launch      # a cluster

Modules: local (this machine), rundir (one run per directory), settings (shared checks), rendezvous,
spec (a plan sized for a cluster), shell, torchrun, slurm, kubernetes, ray_train, jobs. The cluster
targets import their client libraries (kubernetes, ray) only when used."""

from __future__ import annotations

from ..failures import RunFailed
from .jobs import LaunchFile, check_submit, launch_note, render_launch, submit_launch, write_launch
from .local import RunResult, RunSetup, free_port, launch, plan_unsupported, prepare_run, run_plan
from .slurm import job_status
from .spec import TARGETS, LaunchSpec, prepare_launch

__all__ = ["RunSetup", "RunResult", "RunFailed", "prepare_run", "launch", "run_plan", "plan_unsupported",
           "free_port", "TARGETS", "LaunchSpec", "LaunchFile", "prepare_launch", "render_launch", "write_launch",
           "check_submit", "submit_launch", "launch_note", "job_status"]
