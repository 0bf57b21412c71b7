"""torchrun on several nodes: one script, the same on every node, with torchrun's c10d rendezvous hosted
by node 0 (`rdzv_host`) and elastic restarts.

c10d assigns node ranks as the agents join, so no node needs its rank: start the script on every node (node
0 first or within the join timeout). The nodes must share the run directory (plan, checkpoints, metrics).
With a loopback `rdzv_host` every "node" is on this machine (a two-node test or demo): the agents and
their Gloo traffic then stay on 127.0.0.1."""

from __future__ import annotations

from .rendezvous import is_loopback
from .shell import comment, exports, job_files, shell_join
from .spec import LaunchSpec

__all__ = ["torchrun_command", "torchrun_script"]


def torchrun_command(spec: LaunchSpec) -> list[str]:
    """The command every node runs (argv)."""
    host = spec.rdzv_host or "127.0.0.1"
    args = spec.torchrun_args() + ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{host}:{spec.rdzv_port}",
                                   "--rdzv-id", spec.name]
    if is_loopback(host):
        args += ["--local-addr", "127.0.0.1"]
    return args + spec.worker_args(plan_path=f"{spec.out_dir}/plan.json", model_path=spec.model_ref(spec.out_dir))


def torchrun_script(spec: LaunchSpec) -> str:
    """A bash script for every node of the run (see the module doc)."""
    host = spec.rdzv_host or "127.0.0.1"
    extra = {"GLOO_SOCKET_IFNAME": "lo"} if is_loopback(host) and spec.gpu is None else {}
    nodes = "\n".join(f"  node {i}: bash THIS_SCRIPT" + (f"   (on {host}: it hosts the rendezvous)" if i == 0 else "")
                      for i in range(min(spec.nodes, 4)))
    more = f"\n  ... the same on nodes 4-{spec.nodes - 1}" if spec.nodes > 4 else ""
    header = comment(f"""
paraplan launch --on torchrun: {spec.summary_line()}
Run this same script on each of the {spec.nodes} node(s); node 0 is {host}, which hosts torchrun's c10d
rendezvous on port {spec.rdzv_port}. All nodes must share the run directory {spec.out_dir}.
{nodes}{more}
A failed worker restarts the node's workers (up to {spec.max_restarts} times, torchrun --max-restarts), and a
lost node can be started again: every (re)start continues from the newest complete checkpoint in the
run directory (executor.train --auto-resume), so the losses are those of an uninterrupted run.""")
    return "\n".join(["#!/usr/bin/env bash", header, "set -euo pipefail", exports(spec, extra), job_files(spec),
                      "exec " + shell_join(torchrun_command(spec)), ""])
