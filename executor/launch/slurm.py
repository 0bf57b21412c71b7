"""Slurm: an sbatch script that starts one torchrun agent per node with `srun`, the c10d rendezvous on the
job's first node (Slurm's own hostname for it) and elastic restarts; `submit` hands it to `sbatch` and
`job_status` reads `squeue` (then `sacct`).

The job is requeueable (`--requeue`): when Slurm requeues it after a node failure, the new allocation
continues from the newest complete checkpoint in the run directory (executor.train --auto-resume). One-node
jobs keep the rendezvous on the node's loopback (no fixed port to collide with another job's)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .shell import comment, exports, job_files, shell_join
from .spec import LaunchSpec

__all__ = ["sbatch_script", "submit", "job_status", "require"]

_TIMEOUT_S = 60.0


def sbatch_script(spec: LaunchSpec, *, log_dir: str | None = None) -> str:
    """The sbatch script for `spec`; Slurm writes the job's output to `log_dir` (default: the folder
    sbatch is run from) as <name>-<jobid>.out."""
    directives = [f"--job-name={spec.name}", f"--nodes={spec.nodes}", "--ntasks-per-node=1", "--requeue",
                  f"--output={(log_dir + '/') if log_dir else ''}{spec.name}-%j.out", "--open-mode=append"]
    if spec.gpu:
        directives += [f"--gpus-per-node={spec.procs_per_node}", "--exclusive"]
    else:
        directives += [f"--cpus-per-task={spec.procs_per_node}"]  # one core per worker process
    for flag, value in (("--partition", spec.partition), ("--account", spec.account), ("--time", spec.time_limit)):
        if value:
            directives.append(f"{flag}={value}")
    one_node = spec.nodes == 1
    rdzv = (["--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", "$SLURM_JOB_ID",
             "--local-addr", "127.0.0.1"] if one_node else
            ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"$head_node:{spec.rdzv_port}", "--rdzv-id", "$SLURM_JOB_ID"])
    command = (["srun", "--kill-on-bad-exit=1", "--ntasks-per-node=1"] + spec.torchrun_args() + rdzv
               + spec.worker_args(plan_path=f"{spec.out_dir}/plan.json", model_path=spec.model_ref(spec.out_dir)))
    header = comment(f"""
paraplan launch --on slurm: {spec.summary_line()}
Submit with `sbatch THIS_SCRIPT` (or `paraplan launch ... --submit`); follow with `paraplan launch --status JOBID`.
srun starts one torchrun agent per node; the first node of the allocation hosts the c10d rendezvous.
Run directory (shared by the nodes): {spec.out_dir}
A failed worker restarts the node's workers (up to {spec.max_restarts} times); a requeued job continues from the
newest complete checkpoint there (executor.train --auto-resume).""")
    extra = {"GLOO_SOCKET_IFNAME": "lo"} if one_node and spec.gpu is None else {}
    body = [exports(spec, extra), job_files(spec),
            'head_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
            'echo "paraplan: job $SLURM_JOB_ID on $SLURM_JOB_NUM_NODES node(s), rendezvous on $head_node"',
            shell_join(command)]
    return "\n".join(["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), header, "set -euo pipefail",
                      *body, ""])


def require(tool: str) -> str:
    """The path of Slurm command `tool`, or ValueError saying where it runs."""
    path = shutil.which(tool)
    if path is None:
        raise ValueError(f"slurm: {tool} not found on PATH; run this on a Slurm login node (or write the script "
                         "without --submit and submit it there)")
    return path


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ValueError(f"slurm: {Path(argv[0]).name} did not answer within {_TIMEOUT_S:g} s; is slurmctld "
                         "running?") from None


def submit(script: str | Path) -> str:
    """`sbatch --parsable SCRIPT`; the job id (ValueError with sbatch's message when it refuses)."""
    done = _run([require("sbatch"), "--parsable", str(script)])
    first = (done.stdout.strip().splitlines() or [""])[0]
    job = first.split(";")[0]
    if done.returncode != 0 or not re.fullmatch(r"\d+", job):
        message = " ".join((done.stderr or done.stdout).split()) or f"exit code {done.returncode}"
        raise ValueError(f"slurm: sbatch refused the job: {message}")
    return job


def job_status(job_id: str) -> dict[str, str]:
    """State of Slurm job `job_id` from squeue (pending, running and recently ended jobs), else sacct:
    {'job', 'state', 'elapsed', 'nodes', 'reason'/'exit_code', 'source'}. ValueError for an unknown job."""
    if not re.fullmatch(r"\d+(_\d+)?", job_id.strip()):
        raise ValueError(f"status: {job_id!r} is not a Slurm job id (digits, e.g. 1234)")
    job_id = job_id.strip()
    done = _run([require("squeue"), "-h", "-t", "all", "-j", job_id, "-o", "%i|%T|%M|%N|%r"])
    if done.returncode != 0 and "invalid job id" not in done.stderr.lower():
        raise ValueError(f"slurm: squeue failed: {' '.join(done.stderr.split())[:300] or done.returncode}")
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()] if done.returncode == 0 else []
    if lines:
        job, state, elapsed, nodes, reason = (lines[0].split("|") + [""] * 5)[:5]
        return {"job": job, "state": state, "elapsed": elapsed, "nodes": nodes, "reason": reason, "source": "squeue"}
    sacct = shutil.which("sacct")
    if sacct is not None:
        done = _run([sacct, "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,Elapsed,NodeList,ExitCode"])
        rows = [ln for ln in done.stdout.splitlines() if ln.strip()] if done.returncode == 0 else []
        if rows:
            job, state, elapsed, nodes, code = (rows[0].split("|") + [""] * 5)[:5]
            return {"job": job, "state": state.split()[0] if state else "", "elapsed": elapsed, "nodes": nodes,
                    "exit_code": code, "source": "sacct"}
    raise ValueError(f"status: Slurm knows no job {job_id} (squeue lists recent jobs only, and sacct has no "
                     "record of it)")
