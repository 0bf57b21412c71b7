"""A plan sized for a cluster: `prepare_launch` checks a plan against the nodes it is given and resolves
everything a scheduler's script or manifest needs (`LaunchSpec`), before anything is written.

Sizing: the plan's world size (dp*tp*pp*cp) must equal nodes x GPUs per node. GPUs per node default to
the cluster preset's (fewer when the whole plan fits one node), nodes to what the plan fills. The
environment comes from the preset's network (`network_env`). Every target runs the same worker
(`python -m executor.train ... --auto-resume`) under torchrun's c10d rendezvous with elastic restarts,
so a restarted or requeued job continues from the newest complete checkpoint in its run directory.
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from costmodel import (
    ClusterSpec,
    ModelSpec,
    ParallelPlan,
    TrainingSpec,
    check_plan,
    device_kind,
    get_cluster,
    list_models,
    load_model,
    load_plan,
)
from costmodel.step.runnable import dtype_problem

from ..evaluate import DEFAULT_EVAL_BATCHES, DEFAULT_EVAL_EVERY, check_eval_args
from ..pipeline import check_schedule_supported
from .local import plan_unsupported
from .settings import check_numbers, default_global_batch

__all__ = ["TARGETS", "Target", "LaunchSpec", "prepare_launch", "network_env", "job_name", "RDZV_PORT"]

TARGETS = ("torchrun", "slurm", "kubernetes", "ray")
Target = Literal["torchrun", "slurm", "kubernetes", "ray"]
RDZV_PORT = 29500
"""torchrun's default c10d port on the node hosting the rendezvous."""
TORCHRUN_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
"""Per-round rendezvous stores: without it, workers restarted after a failure read the dead workers'
addresses from the store they share (executor.launch.local explains)."""


class LaunchSpec(BaseModel):
    """Everything a launcher writes, resolved and checked: the plan, its size on the cluster, the training
    settings of the worker, the run directory on the cluster, the rendezvous and the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: Target
    name: str = Field(description="job name (a DNS-1123 label: Kubernetes object names use it)")
    plan: ParallelPlan
    model: str | ModelSpec = Field(description="catalog name, or the spec itself (written with the job)")
    nodes: int = Field(gt=0)
    procs_per_node: int = Field(gt=0, description="GPUs per node (worker processes per node on CPU)")
    gpu: str | None = Field(default=None, description="catalog GPU name; None: CPU workers over Gloo")
    cluster: str | None = None
    out_dir: str = Field(description="the run directory as the nodes see it (metrics, checkpoints)")
    steps: int = Field(gt=0)
    global_batch: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    seed: int = Field(default=0, ge=0)
    lr: float | None = None
    warmup_steps: int | None = None
    lr_decay_steps: int | None = None
    dtype: str | None = None
    ckpt_every: int = Field(default=100, ge=0)
    max_restarts: int = Field(default=3, ge=0)
    timeout_s: float = Field(default=1800.0, gt=0)
    log_every: int = Field(default=10, ge=0)
    eval_every: int = Field(default=DEFAULT_EVAL_EVERY, gt=0, description="validation every N steps and at the end")
    eval_batches: int = Field(default=DEFAULT_EVAL_BATCHES, gt=0, description="validation batches per evaluation")
    rdzv_host: str | None = Field(default=None, description="torchrun target: the node hosting the rendezvous")
    rdzv_port: int = Field(default=RDZV_PORT, gt=0, lt=65536)
    env: dict[str, str] = Field(default_factory=dict)
    python: str = Field(default="python", description="the interpreter on the nodes")
    # Slurm
    partition: str | None = None
    account: str | None = None
    time_limit: str | None = None
    # Kubernetes
    image: str = "paraplan:latest"
    namespace: str | None = None
    pvc: str | None = Field(default=None, description="PersistentVolumeClaim holding the run directory")
    # Ray
    ray_address: str | None = None

    @property
    def world_size(self) -> int:
        return self.plan.world_size

    def model_ref(self, folder: str) -> str:
        """The worker's --model: the catalog name, or `folder`/model.json written with the job."""
        return self.model if isinstance(self.model, str) else f"{folder}/model.json"

    def worker_args(self, *, plan_path: str, model_path: str, out_dir: str | None = None) -> list[str]:
        """`-m executor.train ...` for every rank (resuming from the run directory's newest checkpoint)."""
        args = ["-m", "executor.train", "--plan", plan_path, "--model", model_path, "--out", out_dir or self.out_dir,
                "--steps", str(self.steps), "--global-batch", str(self.global_batch), "--seq-len", str(self.seq_len),
                "--seed", str(self.seed), "--ckpt-every", str(self.ckpt_every), "--timeout", f"{self.timeout_s:g}",
                "--log-every", str(self.log_every), "--eval-every", str(self.eval_every),
                "--eval-batches", str(self.eval_batches), "--auto-resume"]
        for flag, value in (("--lr", self.lr), ("--warmup-steps", self.warmup_steps),
                            ("--lr-decay-steps", self.lr_decay_steps), ("--dtype", self.dtype)):
            if value is not None:
                args += [flag, str(value)]
        return args

    def torchrun_args(self) -> list[str]:
        """torchrun's options shared by every target (sizes and elastic restarts; rendezvous apart)."""
        return [self.python, "-m", "torch.distributed.run", "--nnodes", str(self.nodes),
                "--nproc-per-node", str(self.procs_per_node), "--max-restarts", str(self.max_restarts),
                "--monitor-interval", "1"]

    def summary_line(self) -> str:
        device = self.gpu or "CPU processes"
        return (f"{self.plan.short()} ({self.world_size} processes = {self.nodes} node(s) x {self.procs_per_node} "
                f"{device}), model {self.model if isinstance(self.model, str) else self.model.name}, "
                f"{self.steps} steps, global batch {self.global_batch} x {self.seq_len} tokens")


def network_env(cluster: ClusterSpec) -> dict[str, str]:
    """NCCL settings for the preset's inter-node network (NCCL user guide, "Environment Variables"):
    InfiniBand with rail-optimized switching keeps each ring on one rail (NCCL_CROSS_NIC=0); Ethernet
    without RDMA uses NCCL's socket transport, where the guide suggests 4 threads x 4 sockets for 100G+
    links. CPU presets run Gloo: nothing to set."""
    if cluster.gpu.name == "cpu":
        return {}
    env = {"NCCL_DEBUG": "WARN"}
    link = cluster.inter_node_link.name
    if link.startswith("ib-") and cluster.network == "rail-optimized":
        env["NCCL_CROSS_NIC"] = "0"
    elif link.startswith("eth-"):
        env.update({"NCCL_SOCKET_NTHREADS": "4", "NCCL_NSOCKS_PERTHREAD": "4"})
    return env


def job_name(model: str, plan: ParallelPlan) -> str:
    """'paraplan-<model>-<plan>' as a DNS-1123 label (lowercase, '-', at most 40 characters, leaving room
    for the suffixes Kubernetes adds to pod names)."""
    raw = f"paraplan-{model}-{plan.short()}".lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:40].rstrip("-")


def _size(plan: ParallelPlan, cluster: ClusterSpec, nodes: int | None, per_node: int | None) -> tuple[int, int]:
    world = plan.world_size
    need = f"the plan needs {world} processes (dp*tp*pp*cp = {plan.dp}*{plan.tp}*{plan.pp}*{plan.cp})"
    if per_node is None:
        per_node = world // nodes if nodes and world % nodes == 0 else min(cluster.gpus_per_node, world)
    if nodes is None:
        nodes = math.ceil(world / per_node)
    given = f"--nodes {nodes} x --gpus-per-node {per_node} = {nodes * per_node}"
    if nodes * per_node < world:
        raise ValueError(f"nodes: {need} but {given}; pass --nodes {math.ceil(world / per_node)}")
    if nodes * per_node > world:
        fix = f"--nodes {world // per_node}" if world % per_node == 0 else f"--gpus-per-node {world // nodes}"
        raise ValueError(f"nodes: {need} but {given} would leave GPUs idle; pass {fix} (or a plan with more dp)")
    if cluster.gpu.name != "cpu" and per_node > cluster.gpus_per_node:
        raise ValueError(f"gpus_per_node={per_node}: a {cluster.name} node has {cluster.gpus_per_node} GPUs")
    return nodes, per_node


def _parse_env(items: list[str] | tuple[str, ...] | dict[str, str] | None) -> dict[str, str]:
    if isinstance(items, dict):
        items = [f"{k}={v}" for k, v in items.items()]
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"env: {item!r} is not NAME=VALUE")
        out[key] = value
    return out


def prepare_launch(plan: ParallelPlan | str | os.PathLike[str], *, on: str, model: str | ModelSpec = "tiny-llama",
                   steps: int = 50, out: str | None = None, nodes: int | None = None,
                   gpus_per_node: int | None = None, cluster: str | ClusterSpec = "dgx-a100",
                   global_batch: int | None = None, seq_len: int | None = None, seed: int = 0,
                   lr: float | None = None, warmup_steps: int | None = None, lr_decay_steps: int | None = None,
                   dtype: str | None = None, ckpt_every: int = 100, max_restarts: int = 3,
                   timeout_s: float = 1800.0, log_every: int = 10, eval_every: int = DEFAULT_EVAL_EVERY,
                   eval_batches: int = DEFAULT_EVAL_BATCHES, name: str | None = None,
                   rdzv_host: str | None = None, rdzv_port: int = RDZV_PORT,
                   env: list[str] | dict[str, str] | None = None, python: str | None = None,
                   **target_options: str | None) -> LaunchSpec:
    """Check `plan` for `on` (one of TARGETS) and resolve its launch; ValueError naming the field and the
    fix. `target_options`: partition, account, time_limit (Slurm); image, namespace, pvc (Kubernetes);
    ray_address (Ray)."""
    if on not in TARGETS:
        raise ValueError(f"on: {on!r} is not a launch target; choose one of {', '.join(TARGETS)}")
    check_numbers(steps=steps, global_batch=global_batch, seq_len=seq_len, seed=seed, lr=lr,
                  warmup_steps=warmup_steps, lr_decay_steps=lr_decay_steps, ckpt_every=ckpt_every,
                  max_restarts=max_restarts, timeout_s=timeout_s, log_every=log_every, nnodes=nodes)
    check_eval_args(eval_every, eval_batches)
    if gpus_per_node is not None and gpus_per_node < 1:
        raise ValueError(f"gpus_per_node={gpus_per_node}: must be at least 1")
    if not 0 < rdzv_port < 65536:
        raise ValueError(f"rdzv_port={rdzv_port}: give a port in 1-65535")
    plan = plan if isinstance(plan, ParallelPlan) else load_plan(plan)
    cluster_spec = cluster if isinstance(cluster, ClusterSpec) else get_cluster(cluster)
    catalog = isinstance(model, str) and model in list_models()
    model_spec = load_model(model) if isinstance(model, str) else model
    from ..families import build_model

    build_model(model_spec, device="meta")  # what the executor cannot build is refused here
    check_schedule_supported(plan)
    nodes, per_node = _size(plan, cluster_spec, nodes, gpus_per_node)
    if on == "torchrun" and nodes > 1 and not rdzv_host:
        raise ValueError("rdzv_host: a multi-node torchrun launch needs --rdzv-host, the address of the node "
                         "that hosts the rendezvous (node 0)")
    gpu = None if cluster_spec.gpu.name == "cpu" else cluster_spec.gpu.name
    # defaults: those of `paraplan plan` on GPUs (8 sequences per GPU, the model's context), those of
    # `paraplan run` on CPUs (8 sequences, at most 1024 tokens)
    global_batch = global_batch or default_global_batch(plan, sequences=8 * plan.world_size if gpu else 8)
    seq_len = seq_len or (model_spec.max_seq_len if gpu else min(model_spec.max_seq_len, 1024))
    # the executor's rules (costmodel.step.runnable) on the target cluster's device
    if reason := plan_unsupported(plan, global_batch=global_batch, model=model_spec, seq_len=seq_len,
                                  device=device_kind(cluster_spec)):
        raise ValueError(reason)
    if dtype is not None and (problem := dtype_problem(dtype, device_kind(cluster_spec))):
        raise problem
    training = TrainingSpec(global_batch_size=global_batch, seq_len=seq_len,
                            dtype=dtype or ("bf16" if gpu else "fp32"))
    check_plan(model_spec, None, training, plan)
    job = name or job_name(model_spec.name, plan)
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", job):
        raise ValueError(f"name={job!r}: use lowercase letters, digits and '-', at most 40 characters")
    default_out = f"/runs/{job}" if on == "kubernetes" else str(Path("runs", job))
    out_dir = out or default_out
    if on != "kubernetes":
        out_dir = str(Path(out_dir).expanduser().resolve())  # the nodes share this filesystem
    options = {k: v for k, v in target_options.items() if v is not None}
    return LaunchSpec(
        target=on, name=job, plan=plan, model=model if catalog else model_spec, nodes=nodes,
        procs_per_node=per_node, gpu=gpu, cluster=cluster_spec.name, out_dir=out_dir, steps=steps,
        global_batch=global_batch, seq_len=seq_len, seed=seed, lr=lr, warmup_steps=warmup_steps,
        lr_decay_steps=lr_decay_steps, dtype=dtype, ckpt_every=ckpt_every, max_restarts=max_restarts,
        timeout_s=timeout_s, log_every=log_every, eval_every=eval_every,
        eval_batches=eval_batches, rdzv_host=rdzv_host, rdzv_port=rdzv_port,
        env={**TORCHRUN_ENV, **network_env(cluster_spec), **_parse_env(env)},
        python=python or (sys.executable if on in ("torchrun", "slurm", "ray") else "python"), **options)

