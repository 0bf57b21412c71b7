"""Launch a plan on this machine (or one node of a multi-node run): validate it, build the `torchrun`
command, run it, and explain failures.

    from executor import prepare_run, launch
    setup = prepare_run("plan.json", model="tiny-llama", steps=50, out="runs/a")
    result = launch(setup)             # raises RunFailed naming the rank and the cause

Everything that can be checked before a process starts is checked in `prepare_run` (plan file, model,
plan-vs-model rules via `costmodel.check_plan`, machine capacity, checkpoint to resume from, finite
numbers, the run directory and the rendezvous endpoint), raising `ValueError` with the field and the
fix; `launch` then holds the run directory (`rundir`) so no other run writes into it. Single node: torchrun's c10d rendezvous on a free port of
127.0.0.1. Multi-node: `nnodes`, `node_rank` and `rdzv_endpoint` pass through to torchrun. Elastic
restarts (`max_restarts`) resume every worker from the run's newest checkpoint.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from costmodel import (
    ModelSpec,
    ParallelPlan,
    StepMeasurement,
    TrainingSpec,
    check_plan,
    executor_unsupported,
    load_model,
    load_plan,
)
from costmodel.step.runnable import dtype_problem

from ..checkpoint import read_trainer_state, resolve_checkpoint
from ..compile import compile_unsupported
from ..data import load_corpus, split_corpus, window_length
from ..evaluate import DEFAULT_EVAL_BATCHES, DEFAULT_EVAL_EVERY, check_eval_args
from ..failures import RunFailed, explain_failure
from ..float8 import float8_unsupported
from ..lifetime import run_child
from ..memguard import default_seq_len, refuse_if_too_big
from ..metrics import read_metrics, write_json_atomic
from ..scaling import host_capacity, scale_plan
from ..span_corruption import check_vocab
from .rendezvous import check_endpoint, wait_for_endpoint
from .rundir import check_out_path, hold_run_dir
from .settings import PACKAGE_ROOT, check_numbers, default_global_batch, schedule_note

__all__ = ["RunSetup", "RunResult", "RunFailed", "prepare_run", "launch", "run_plan", "plan_unsupported", "free_port"]


@dataclass(frozen=True)
class RunSetup:
    """A validated run: the (possibly scaled) plan, resolved training settings and the torchrun command."""

    plan: ParallelPlan
    model: ModelSpec
    training: TrainingSpec
    out_dir: Path
    steps: int
    command: tuple[str, ...]
    env: dict[str, str]
    changes: tuple[str, ...] = ()
    resume_from: Path | None = None
    nproc_per_node: int = 1
    node_rank: int = 0
    overwrite: bool = False
    notes: tuple[str, ...] = ()
    """What the user should know about settings taken from a checkpoint (e.g. the schedule length)."""
    rdzv_endpoint: str | None = None
    rdzv_timeout_s: float = 120.0

    def command_line(self) -> str:
        """The command as a shell line, with the environment it needs (copy-paste reproducible)."""
        return shlex.join([f"{k}={v}" for k, v in sorted(self.env.items())] + list(self.command))


@dataclass
class RunResult:
    """What a finished run left in its directory."""

    out_dir: Path
    returncode: int
    elapsed_s: float
    summary: StepMeasurement | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    restarts: int = 0

    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.metrics]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _local_device() -> str:
    """'cuda' when this machine's workers get GPUs, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def plan_unsupported(plan: ParallelPlan, *, global_batch: int | None = None, model: ModelSpec | None = None,
                     seq_len: int | None = None, device: str | None = None) -> str | None:
    """Why the executor cannot run `plan` (one line naming the field and the fix), or None: the rules
    of `costmodel.step.runnable` (the model family, tied embeddings with pipelining, the pipeline
    schedules' micro-batch limits at `global_batch` rows per step, context parallelism's sequence
    split and attention variant, expert parallelism's layout) on `device` ('cpu' or 'cuda'; default:
    this machine's). A rule whose input is not given is skipped. The planner marks such plans;
    `validate --local` skips them."""
    return executor_unsupported(plan, device=device or _local_device(), model=model, seq_len=seq_len,
                                global_batch=global_batch)


def prepare_run(plan: ParallelPlan | str | os.PathLike[str], *, model: str | ModelSpec, steps: int,
                out: str | os.PathLike[str], global_batch: int | None = None, seq_len: int | None = None,
                seed: int | None = None, lr: float | None = None, warmup_steps: int | None = None,
                lr_decay_steps: int | None = None, ckpt_every: int = 0, resume: str | os.PathLike[str] | None = None,
                max_restarts: int = 0, timeout_s: float = 300.0, scale_to: int | None = None,
                nnodes: int = 1, node_rank: int = 0, rdzv_endpoint: str | None = None, dtype: str | None = None,
                corpus: str | None = None, log_every: int = 10, compile: bool | None = None,
                overwrite: bool = False, rdzv_timeout_s: float = 120.0, eval_every: int = DEFAULT_EVAL_EVERY,
                eval_batches: int = DEFAULT_EVAL_BATCHES, force: bool = False,
                suggest: Callable[[Any], str] | None = None) -> RunSetup:
    """Validate a run and build its torchrun command; ValueError (field + fix) on bad input. `compile`:
    torch.compile each block (None: on CUDA, off on CPU). A plan whose predicted memory does not fit this
    host is refused (`executor.memguard`, MemoryRefused naming the nearest plan `suggest` finds) unless `force`."""
    check_numbers(steps=steps, global_batch=global_batch, seq_len=seq_len, seed=seed, lr=lr,
                  warmup_steps=warmup_steps, lr_decay_steps=lr_decay_steps, ckpt_every=ckpt_every,
                  max_restarts=max_restarts, timeout_s=timeout_s, log_every=log_every, nnodes=nnodes)
    check_numbers(timeout_s=rdzv_timeout_s)
    check_eval_args(eval_every, eval_batches)
    if scale_to is not None and scale_to < 1:
        raise ValueError(f"scale_to={scale_to}: must be at least 1 process")
    out_dir = check_out_path(out)
    plan = load_plan(plan) if not isinstance(plan, ParallelPlan) else plan
    model_spec = load_model(model) if isinstance(model, str) else model
    from ..families import build_model

    build_model(model_spec, device="meta")  # raises ValueError for what the executor cannot run
    if dtype is not None:
        # a run on this host is checked against its device; the workers of a multi-node run check their
        # own (here only what no device trains, fp16, is refused)
        if problem := dtype_problem(dtype, _local_device() if rdzv_endpoint is None else "cuda"):
            raise problem
        if dtype == "fp8" and rdzv_endpoint is None and (reason := float8_unsupported()):
            raise ValueError(reason)
    if node_rank < 0:
        raise ValueError(f"node_rank={node_rank}: must be >= 0")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank={node_rank} must be in [0, nnodes={nnodes})")
    if nnodes > 1 and not rdzv_endpoint:
        raise ValueError("rdzv_endpoint: a multi-node run needs --rdzv-endpoint HOST:PORT of node 0")
    if rdzv_endpoint is not None:
        check_endpoint(rdzv_endpoint, hosts_it=node_rank == 0)
    resume_from = resolve_checkpoint(resume) if resume is not None else None
    if overwrite and resume_from is not None and out_dir in resume_from.resolve().parents:
        raise ValueError(f"overwrite: --overwrite would delete the checkpoint --resume points at ({resume_from}); "
                         "drop --overwrite to continue the run, or resume into another --out")
    saved = read_trainer_state(resume_from) if resume_from is not None else {}
    if resume_from is not None and steps <= int(saved["step"]):
        raise ValueError(f"steps={steps}: the checkpoint {resume_from} is already at step {saved['step']}; "
                         "ask for more steps")

    changes: tuple[str, ...] = ()
    capacity = host_capacity() * nnodes
    if scale_to is not None:
        if scale_to > capacity:
            raise ValueError(f"scale_to={scale_to} exceeds the {capacity} processes this machine can host")
        global_batch = global_batch or saved.get("global_batch_size")
        plan, changes = scale_plan(plan, model_spec, max_world=scale_to, global_batch=global_batch)
    elif plan.world_size > capacity:
        raise ValueError(f"the plan needs {plan.world_size} processes (dp*tp*pp*cp) but this machine hosts at "
                         f"most {capacity}; pass --scale-to {capacity} (lowers dp first, then pp, then tp)")
    if plan.world_size % nnodes:
        raise ValueError(f"nnodes={nnodes} does not divide the plan's {plan.world_size} processes")

    seed = seed if seed is not None else int(saved.get("seed", 0))
    global_batch = global_batch or saved.get("global_batch_size") or default_global_batch(plan)
    seq_len = seq_len or saved.get("seq_len") or default_seq_len(model_spec)
    training = TrainingSpec(global_batch_size=int(global_batch), seq_len=int(seq_len), dtype=dtype or "fp32")
    check_plan(model_spec, None, training, plan)
    # the executor's rules (costmodel.step.runnable) on the plan as it will run: after scaling, with the
    # model, batch and sequence length settled
    reason = plan_unsupported(plan, global_batch=int(global_batch), model=model_spec, seq_len=int(seq_len))
    if reason:
        raise ValueError(reason)
    if not force and rdzv_endpoint is None:   # the memory guard for a run on this host, before any process starts
        refuse_if_too_big(model_spec, plan, training, processes=plan.world_size // nnodes, nnodes=nnodes, dtype=dtype,
                          suggest=suggest)
    if compile and (reason := compile_unsupported(plan)):
        raise ValueError(reason)
    split_corpus(load_corpus(corpus), min_tokens=window_length(int(seq_len), model_spec.arch) + 1)
    if model_spec.arch == "encoder-decoder":
        check_vocab(model_spec.vocab_size, int(seq_len))
    note = schedule_note(saved, steps=steps, lr_decay_steps=lr_decay_steps) if saved else None

    nproc = plan.world_size // nnodes
    worker = ["-m", "executor.train", "--plan", str(out_dir / "plan.json"), "--model", _model_arg(model, out_dir),
              "--out", str(out_dir), "--steps", str(steps), "--global-batch", str(global_batch),
              "--seq-len", str(seq_len), "--seed", str(seed), "--ckpt-every", str(ckpt_every),
              "--timeout", str(timeout_s), "--log-every", str(log_every), "--eval-every", str(eval_every),
              "--eval-batches", str(eval_batches)]
    for flag, value in (("--lr", lr), ("--warmup-steps", warmup_steps), ("--lr-decay-steps", lr_decay_steps),
                        ("--dtype", dtype), ("--corpus", corpus and str(Path(corpus).resolve())),
                        ("--resume", resume_from)):
        if value is not None:
            worker += [flag, str(value)]
    if compile is not None:
        worker.append("--compile" if compile else "--no-compile")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                "--max-restarts", str(max_restarts), "--monitor-interval", "0.5"]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])),
           # torchrun's shared TCPStore outlives an elastic restart without a per-attempt prefix, so the
           # restarted workers read the dead workers' Gloo addresses (connectFullMesh: connection refused,
           # or a hang until the timeout); the rendezvous store is prefixed per round
           "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    if nnodes == 1 and rdzv_endpoint is None:
        torchrun += ["--nnodes", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
                     "--local-addr", "127.0.0.1"]
        if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
            env["GLOO_SOCKET_IFNAME"] = os.environ.get("GLOO_SOCKET_IFNAME", "lo")
    else:
        torchrun += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "c10d",
                     "--rdzv-endpoint", str(rdzv_endpoint), "--rdzv-id", f"paraplan-{out_dir.name}",
                     "--rdzv-conf", f"join_timeout={math.ceil(rdzv_timeout_s)}"]
    return RunSetup(plan=plan, model=model_spec, training=training, out_dir=out_dir, steps=steps,
                    command=tuple(torchrun + worker), env=env, changes=changes, resume_from=resume_from,
                    nproc_per_node=nproc, node_rank=node_rank, overwrite=overwrite,
                    notes=(note,) if note else (), rdzv_endpoint=rdzv_endpoint, rdzv_timeout_s=rdzv_timeout_s)


def _model_arg(model: str | ModelSpec, out_dir: Path) -> str:
    """A catalog name or file path as given; a ModelSpec object is written to out_dir/model.json."""
    if isinstance(model, str):
        path = Path(model)
        return str(path.resolve()) if path.is_file() else model
    return str(out_dir / "model.json")


def _raise_on_sigterm() -> Any:
    """While torchrun runs, turn SIGTERM into SystemExit so the job is stopped too (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def launch(setup: RunSetup, *, stream: TextIO | None = sys.stdout) -> RunResult:
    """Run `setup` with torchrun and wait. Output goes to `stream` (None: silent) and `<out>/launch.log`.
    Node 0 holds the run directory for the whole run (`rundir.hold_run_dir`: a directory in use or holding
    another run is refused with ValueError before anything starts); other nodes first wait for node 0's
    rendezvous. A failed run raises `RunFailed` with the failing rank and its cause."""
    if setup.node_rank > 0:
        if setup.rdzv_endpoint and not setup.rdzv_endpoint.startswith("$"):
            wait_for_endpoint(setup.rdzv_endpoint, timeout_s=setup.rdzv_timeout_s)
        check_out_path(setup.out_dir).mkdir(parents=True, exist_ok=True)
        return _launch_in(setup, stream=stream)
    with hold_run_dir(setup.out_dir, resume=setup.resume_from, overwrite=setup.overwrite):
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                return _launch_in(setup, stream=stream)
            except RunFailed as exc:
                if attempt == PORT_ATTEMPTS or not _lost_port_race(setup, exc):
                    raise
                setup = _on_new_port(setup)
                if stream is not None:
                    stream.write(f"paraplan: a port of this host's rendezvous was taken meanwhile; starting again "
                                 f"({attempt + 1}/{PORT_ATTEMPTS})\n")
        raise AssertionError("unreachable")


PORT_ATTEMPTS = 3
"""Starts of a one-host run whose rendezvous lost its port: the port is free when picked and taken by
another process before torchrun (or its rank 0's store) binds it; nothing has trained yet."""


def _lost_port_race(setup: RunSetup, exc: RunFailed) -> bool:
    """Whether a run this process placed on 127.0.0.1 failed binding a port (EADDRINUSE), at start-up."""
    return setup.rdzv_endpoint is None and ("EADDRINUSE" in str(exc) or "address already in use" in str(exc))


def _on_new_port(setup: RunSetup) -> RunSetup:
    """`setup` with its local rendezvous endpoint on another free port."""
    command = list(setup.command)
    i = command.index("--rdzv-endpoint") + 1
    command[i] = f"127.0.0.1:{free_port()}"
    return replace(setup, command=tuple(command))


def _launch_in(setup: RunSetup, *, stream: TextIO | None) -> RunResult:
    out = setup.out_dir
    log_path = out / ("launch.log" if setup.node_rank == 0 else f"launch.node{setup.node_rank}.log")
    write_json_atomic(out / "plan.json", setup.plan.model_dump(mode="json"))
    if "--model" in setup.command and setup.command[setup.command.index("--model") + 1] == str(out / "model.json"):
        write_json_atomic(out / "model.json", setup.model.model_dump(mode="json"))
    if setup.node_rank == 0:
        shutil.rmtree(out / "failures", ignore_errors=True)
        write_json_atomic(out / "run.json", {"command": list(setup.command), "changes": list(setup.changes),
                                             "resume_from": str(setup.resume_from) if setup.resume_from else None})
    t0 = time.perf_counter()
    previous = _raise_on_sigterm()
    try:
        with open(log_path, "w") as log:
            # torchrun ends with this process even when it is killed outright (its workers end with torchrun)
            returncode, tail = run_child(setup.command, stream=stream, log=log, env={**os.environ, **setup.env})
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    elapsed_s = time.perf_counter() - t0
    if returncode != 0:
        raise RunFailed(explain_failure(out, tail, returncode), returncode=returncode, log_path=log_path)
    summary_path = out / "summary.json"
    summary = StepMeasurement.model_validate_json(summary_path.read_text()) if summary_path.is_file() else None
    metrics = read_metrics(out / "metrics.jsonl")
    return RunResult(out_dir=out, returncode=returncode, elapsed_s=elapsed_s, summary=summary, metrics=metrics,
                     restarts=max((r.get("attempt", 0) for r in metrics), default=0))


def run_plan(plan: ParallelPlan | str | os.PathLike[str], *, stream: TextIO | None = sys.stdout,
             **kwargs: Any) -> RunResult:
    """`prepare_run(plan, **kwargs)` then `launch` - the one call the CLI and the UI need."""
    return launch(prepare_run(plan, **kwargs), stream=stream)
