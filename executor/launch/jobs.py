"""One entry for every cluster target: render what it needs (one self-contained file), write it atomically,
and submit it.

    spec = prepare_launch("plan.json", on="slurm", nodes=4, cluster="dgx-h100", model="llama3-8b", steps=1000)
    path = write_launch(spec)            # paraplan-llama3-8b-....sbatch
    job = submit_launch(spec, path)      # sbatch; the job id

Everything a submission needs (sbatch, kubectl, Ray) is checked before anything is written, so a refused
launch leaves no file behind; an existing file is replaced only with `overwrite`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from costmodel.atomic import write_text_atomic

from ..failures import RunFailed, explain_failure
from ..lifetime import run_child
from .rendezvous import is_local_host, wait_for_endpoint
from .rundir import hold_run_dir, previous_run
from .spec import LaunchSpec

__all__ = ["LaunchFile", "render_launch", "write_launch", "check_submit", "submit_launch", "launch_note"]


@dataclass(frozen=True)
class LaunchFile:
    """A launch file: its suggested name, text, MIME type and the command that uses it."""

    file_name: str
    text: str
    mime: str
    usage: str


def render_launch(spec: LaunchSpec, *, kind: str = "pytorchjob", log_dir: str | None = None) -> LaunchFile:
    """The file `spec.target` needs (ValueError when a target's own check refuses the spec). `kind`
    chooses the Kubernetes object (pytorchjob or jobset); `log_dir` where Slurm writes the job's output."""
    if spec.target == "slurm":
        from .slurm import sbatch_script

        name = f"{spec.name}.sbatch"
        return LaunchFile(name, sbatch_script(spec, log_dir=log_dir), "text/x-sh", f"sbatch {name}")
    if spec.target == "torchrun":
        from .torchrun import torchrun_script

        name = f"{spec.name}.sh"
        return LaunchFile(name, torchrun_script(spec), "text/x-sh", f"bash {name}  # on each of the {spec.nodes} nodes")
    if spec.target == "kubernetes":
        from .kubernetes import manifests, to_yaml

        name = f"{spec.name}.{kind}.yaml"
        return LaunchFile(name, to_yaml(manifests(spec, kind=kind)), "application/yaml", f"kubectl apply -f {name}")
    from .ray_train import driver_script

    name = f"{spec.name.replace('-', '_')}_ray.py"
    return LaunchFile(name, driver_script(spec), "text/x-python", f"python {name} --address auto")


def check_submit(spec: LaunchSpec) -> None:
    """What `submit_launch` will need, checked up front (ValueError naming the missing piece)."""
    if spec.target == "slurm":
        from .slurm import require

        require("sbatch")
    elif spec.target == "kubernetes":
        if shutil.which("kubectl") is None:
            raise ValueError("kubernetes: kubectl not found on PATH; write the manifest without --submit and "
                             "apply it where kubectl is configured (kubectl apply -f FILE)")
    elif spec.target == "ray":
        from .ray_train import check_address, require_ray

        require_ray(local=spec.ray_address is None)
        check_address(spec.ray_address)
    elif spec.target == "torchrun" and spec.rdzv_host:
        is_local_host(spec.rdzv_host)  # resolves it: an unknown host is refused here


def write_launch(spec: LaunchSpec, path: str | os.PathLike[str] | None = None, *, kind: str = "pytorchjob",
                 overwrite: bool = False) -> Path:
    """Write the target's file to `path` (default: its suggested name here) atomically; an existing file
    is refused unless `overwrite`. Scripts are made executable."""
    target = Path(path) if path is not None else None
    log_dir = str(target.resolve().parent if target is not None else Path.cwd()) if spec.target == "slurm" else None
    rendered = render_launch(spec, kind=kind, log_dir=log_dir)
    target = target or Path(rendered.file_name)
    if target.is_dir():
        raise ValueError(f"file: {str(target)!r} is a directory; give a file name (e.g. {rendered.file_name})")
    if target.exists() and not overwrite:
        raise ValueError(f"file: {str(target)!r} exists; pass --overwrite to replace it or choose another --file")
    for parent in target.resolve().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"file: {str(parent)!r} is a file, so {str(target)!r} cannot be written")
            break
    write_text_atomic(target, rendered.text)
    if rendered.mime in ("text/x-sh", "text/x-python"):
        target.chmod(target.stat().st_mode | 0o111 & ~_umask())
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def launch_note(spec: LaunchSpec) -> str | None:
    """A line for the user when the run directory (seen from here) already holds a run: the job will
    continue it from its newest checkpoint."""
    out = Path(spec.out_dir)
    found = previous_run(out) if spec.target != "kubernetes" and out.is_dir() else []
    if not found:
        return None
    return (f"{out} already holds a run ({', '.join(found)}): the job continues it from its newest checkpoint; "
            "choose another --out for a new run")


def _run_script(spec: LaunchSpec, path: Path, *, stream: TextIO | None) -> int:
    """The torchrun target here: this node's agent (after checking node 0's rendezvous answers)."""
    host = spec.rdzv_host or "127.0.0.1"
    if spec.nodes > 1 and not is_local_host(host):
        wait_for_endpoint(f"{host}:{spec.rdzv_port}", timeout_s=120.0)
    code, tail = run_child(["bash", str(path)], stream=stream)
    if code != 0:
        raise RunFailed(explain_failure(Path(spec.out_dir), tail, code), returncode=code)
    return code


def submit_launch(spec: LaunchSpec, path: str | os.PathLike[str], *, stream: TextIO | None = sys.stdout,
                  num_cpus: int | None = None) -> dict[str, Any]:
    """Submit the written file: sbatch (returns {'job'}), kubectl apply ({'applied'}), Ray Train here as the
    driver ({'summary', 'metrics', ...}), or this node's torchrun agent ({'returncode'})."""
    check_submit(spec)
    path = Path(path)
    if spec.target == "slurm":
        from .slurm import submit

        return {"job": submit(path)}
    if spec.target == "kubernetes":
        done = subprocess.run(["kubectl", "apply", "-f", str(path)], capture_output=True, text=True, timeout=120,
                              check=False)
        if done.returncode != 0:
            raise ValueError(f"kubernetes: kubectl apply failed: {' '.join(done.stderr.split())[:300]}")
        return {"applied": done.stdout.strip()}
    if spec.target == "ray":
        from .ray_train import fit

        out = Path(spec.out_dir)
        with hold_run_dir(out, resume=out):  # one driver at a time; an earlier run here is continued
            return fit(spec, num_cpus=num_cpus)
    return {"returncode": _run_script(spec, path, stream=stream)}
