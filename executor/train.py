"""The training worker that torchrun starts on every rank: `python -m executor.train --plan P --model M ...`.

Per rank: init the process group (Gloo on CPU, NCCL + Gloo on CUDA, with a timeout), build the engine for
the plan, optionally resume from a checkpoint (same or different plan), then train: the global batch of
step s is a pure function of (seed, s) (executor.data), the learning rate follows linear warm-up and
cosine decay, the engine does gradient accumulation, clipping and AdamW. Rank 0 appends one JSON object
per step to `<out>/metrics.jsonl` (wall and CPU seconds of its step, the host's load average, ...; every
--eval-every steps and at the end the validation loss and perplexity of the held-out split, with BLEU/ROUGE
at the end for seq2seq models: executor.evaluate) and writes `<out>/summary.json` (a costmodel
`StepMeasurement`) and `<out>/memory.json` (peak resident-set rise and peak live tensor bytes, max over
ranks; executor.memtrack). With `--trace-step N` every rank writes a torch.profiler trace of step N to
`<out>/trace/rank<R>.json` (executor.trace); that step is left out of the step-time median.

A rank that raises writes `<out>/failures/rank<R>.json` (rank, step, cause) before exiting non-zero, so the
launcher can name the rank and the cause. After an elastic restart (TORCHELASTIC_RESTART_COUNT > 0), or
always with `--auto-resume` (what cluster launches pass, so a requeued job or a rejoining node continues),
the worker resumes from the newest complete checkpoint of `<out>`.

Test hook: PARAPLAN_FAULT="rank=R,step=S,mode=raise|kill|ckpt-kill" makes rank R raise, SIGKILL itself
after step S, or SIGKILL itself while checkpoint S is being written - on the first attempt only.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from costmodel import TrainingSpec, load_model, load_plan
from costmodel.step.runnable import dtype_problem

from .checkpoint import CHECKPOINT_DIRNAME, latest_checkpoint, load_checkpoint, save_checkpoint
from .data import BatchSource, load_corpus
from .evaluate import (
    DEFAULT_EVAL_BATCHES,
    DEFAULT_EVAL_EVERY,
    as_record,
    check_eval_args,
    evaluate,
    is_eval_step,
)
from .lifetime import die_with_parent
from .memtrack import SteadyStepProbe, TensorBytesTracker
from .metrics import (
    MemoryTracker,
    MetricsWriter,
    device_gpu_spec,
    model_flops_per_step,
    read_metrics,
    summarize,
    write_json_atomic,
)
from .trace import step_trace, trace_step_from_env

__all__ = ["lr_at", "build_arg_parser", "train", "write_failure", "main", "FAILURES_DIRNAME", "MEMORY_FILENAME",
           "ENGINE_FILENAME", "DEFAULT_LR"]

FAILURES_DIRNAME = "failures"
ENGINE_FILENAME = "engine.json"
"""Run-directory file with what the engine applied: dtype, compiled blocks, fp8, async TP, optimizer kernel."""
MEMORY_FILENAME = "memory.json"
"""Run-directory file with the peak memory over ranks: resident-set rise and live tensor bytes."""
DEFAULT_LR = 3e-4
DEFAULT_MIN_LR_RATIO = 0.1


def lr_at(step: int, *, lr: float, warmup_steps: int, decay_steps: int,
          min_lr_ratio: float = DEFAULT_MIN_LR_RATIO) -> float:
    """Learning rate of step `step` (1-based): linear warm-up to `lr` over `warmup_steps`, then cosine decay
    to `min_lr_ratio * lr` at `decay_steps` (Loshchilov & Hutter 2017, SGDR eq. 5), flat after."""
    if warmup_steps > 0 and step <= warmup_steps:
        return lr * step / warmup_steps
    span = max(1, decay_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    min_lr = lr * min_lr_ratio
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m executor.train", description=__doc__.splitlines()[0])
    p.add_argument("--plan", required=True, help="plan JSON file")
    p.add_argument("--model", required=True, help="catalog name or ModelSpec YAML/JSON")
    p.add_argument("--out", required=True, help="run directory (metrics.jsonl, summary.json, checkpoints/)")
    p.add_argument("--steps", type=int, required=True, help="train until this optimizer step")
    p.add_argument("--global-batch", type=int, required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default=None, help="compute dtype (default fp32 on CPU, bf16 on CUDA; fp8 on GPUs "
                   "of compute capability >= 8.9)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile each block (default: on CUDA, off on CPU)")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {DEFAULT_LR})")
    p.add_argument("--warmup-steps", type=int, default=None, help="default: lr-decay-steps // 10")
    p.add_argument("--lr-decay-steps", type=int, default=None,
                   help="cosine length (default: --steps; a resumed run keeps its checkpoint's)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--ckpt-every", type=int, default=0, help="checkpoint every N steps and at the end (0: off)")
    p.add_argument("--ckpt-keep", type=int, default=2)
    p.add_argument("--resume", default=None, help="checkpoint (or run directory) to start from")
    p.add_argument("--auto-resume", action="store_true",
                   help="continue from the newest complete checkpoint in --out when there is one (a job a "
                        "scheduler restarts or requeues picks up where it stopped)")
    p.add_argument("--timeout", type=float, default=300.0, help="process-group (collective) timeout, seconds")
    p.add_argument("--corpus", default=None, help="text file to train on (default: the generated corpus)")
    p.add_argument("--log-every", type=int, default=10, help="print a progress line every N steps (0: never)")
    p.add_argument("--trace-step", type=int, default=None,
                   help="write a torch.profiler trace of this step to <out>/trace/ (default: $PARAPLAN_TRACE_STEP "
                        "or none)")
    p.add_argument("--eval-every", type=int, default=DEFAULT_EVAL_EVERY,
                   help="validation loss every N steps and at the end")
    p.add_argument("--eval-batches", type=int, default=DEFAULT_EVAL_BATCHES, help="validation batches per evaluation")
    return p


def _parse_fault(attempt: int) -> dict[str, Any] | None:
    spec = os.environ.get("PARAPLAN_FAULT")
    if not spec or attempt > 0:
        return None
    fields = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    return {"rank": int(fields.get("rank", 0)), "step": int(fields.get("step", 1)),
            "mode": fields.get("mode", "raise")}


def _init_distributed(timeout_s: float) -> tuple[torch.device, str]:
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return device, "nccl" if use_cuda else "gloo"


def _resume_path(args: argparse.Namespace) -> Path | None:
    if getattr(args, "auto_resume", False) or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        own = latest_checkpoint(Path(args.out) / CHECKPOINT_DIRNAME)
        if own is not None:
            return own  # an elastic restart continues from this run's newest checkpoint
    if args.resume:
        found = latest_checkpoint(args.resume) if not Path(args.resume, ".metadata").exists() else None
        return found or Path(args.resume)
    return None


def train(args: argparse.Namespace, *,
          on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None,
          attempt: int | None = None) -> dict[str, Any] | None:
    """Run the training loop on this rank; rank 0 returns the summary (as a dict), other ranks None.
    `on_checkpoint(path, record)` runs on every rank after each complete checkpoint, with the step's
    metrics record (Ray Train reports it there). `attempt`: restarts so far (default: torchrun's
    TORCHELASTIC_RESTART_COUNT)."""
    from .engine import build_engine  # imported late: torch.distributed pieces load only in workers

    device, backend = _init_distributed(args.timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(args.out)
    check_eval_args(args.eval_every, args.eval_batches)
    model_spec, plan = load_model(args.model), load_plan(args.plan)
    if plan.world_size != world:
        raise ValueError(f"plan needs {plan.world_size} processes (dp*tp*pp*cp) but torchrun started {world}")
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    if problem := dtype_problem(dtype, "cuda" if device.type == "cuda" else "cpu"):
        raise problem   # e.g. a remote node's workers asked for bf16 on CPUs
    training = TrainingSpec(global_batch_size=args.global_batch, seq_len=args.seq_len, dtype=dtype)
    if attempt is None:
        attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))  # elastic restarts so far
    fault = _parse_fault(attempt)

    memory = MemoryTracker(device)
    memory.start()
    resume = _resume_path(args)
    state: dict[str, Any] = {}
    if resume is not None:
        from .checkpoint import read_trainer_state

        state = read_trainer_state(resume)
    seed = args.seed
    lr = args.lr if args.lr is not None else state.get("lr", DEFAULT_LR)
    decay = args.lr_decay_steps if args.lr_decay_steps is not None else state.get("lr_decay_steps", args.steps)
    warmup = args.warmup_steps if args.warmup_steps is not None else state.get("warmup_steps", decay // 10)
    engine = build_engine(model_spec, plan, training, device=device, seed=seed, lr=lr,
                          weight_decay=args.weight_decay, compile=args.compile)
    if rank == 0:
        write_json_atomic(out / ENGINE_FILENAME, {"dtype": dtype, **engine.settings})
    start_step = 0
    if resume is not None:
        state = load_checkpoint(engine.model_parts, engine.optimizer, resume)
        start_step = int(state["step"])
        if rank == 0:
            print(f"[paraplan] resumed from {resume} at step {start_step} "
                  f"(saved by plan {state['plan'].get('dp')}x{state['plan'].get('tp')}x"
                  f"{state['plan'].get('pp')} dp x tp x pp)", flush=True)
    corpus = load_corpus(args.corpus, min_tokens=args.seq_len + 2)
    source = BatchSource(corpus, seed=seed, global_batch_size=args.global_batch, seq_len=args.seq_len,
                         arch=model_spec.arch, dp_rank=engine.dp_rank, dp_size=engine.dp_size,
                         vocab_size=model_spec.vocab_size)
    gpu = device_gpu_spec(device)
    peak_flops = gpu.peak_flops(dtype) if gpu is not None and dtype in gpu.peak_flops_per_s else None
    flops_per_step = model_flops_per_step(model_spec, training)
    tokens_per_step = args.global_batch * args.seq_len
    writer = MetricsWriter(out / "metrics.jsonl", resume_step=start_step) if rank == 0 else None
    trainer_state = {"seed": seed, "lr": lr, "warmup_steps": warmup, "lr_decay_steps": decay,
                     "min_lr_ratio": DEFAULT_MIN_LR_RATIO, "global_batch_size": args.global_batch,
                     "seq_len": args.seq_len, "plan": plan.model_dump(mode="json"), "model": model_spec.name,
                     "world_size": world, "corpus": args.corpus}
    records: list[dict[str, Any]] = []
    trace_step = args.trace_step if getattr(args, "trace_step", None) is not None else trace_step_from_env()
    step = start_step
    tensor_peak_bytes = 0
    try:
        for step in range(start_step + 1, args.steps + 1):
            tokens, targets = (t.to(device, non_blocking=True) for t in source.batch(step))
            step_lr = lr_at(step, lr=lr, warmup_steps=warmup, decay_steps=decay)
            # (not around compiled blocks: torch.compile does not run under a Python dispatch mode)
            tracker = _tensor_tracker(engine) if (step == start_step + 1 and device.type == "cpu"
                                                  and not engine.settings.get("compile")) else None
            traced = step == trace_step
            t0, cpu0 = time.perf_counter(), time.process_time()
            probe = SteadyStepProbe(tracker, engine.optimizer) if tracker is not None else None
            with (tracker or contextlib.nullcontext(),  # warm-up step only: it is not timed
                  probe or contextlib.nullcontext(),
                  step_trace(out, rank=rank, device=device) if traced else contextlib.nullcontext()):
                loss = engine.train_step(tokens, targets, lr=step_lr, max_grad_norm=args.max_grad_norm)
            if probe is not None:
                tensor_peak_bytes = probe.peak_bytes   # as a steady step (optimizer states alive) reaches it
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_time_s = time.perf_counter() - t0
            cpu_time_s = time.process_time() - cpu0  # this rank's CPU work (all its threads)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {step}; lower --lr or check the data")
            tflops = flops_per_step / step_time_s / world / 1e12
            rec = {"step": step, "loss": loss, "lr": step_lr, "step_time_s": step_time_s,
                   "tokens_per_s": tokens_per_step / step_time_s, "tflops_per_gpu": tflops,
                   "mfu": tflops * 1e12 / peak_flops if peak_flops else None,
                   "peak_bytes": memory.peak_bytes(), "time_unix_s": time.time(), "attempt": attempt,
                   "cpu_time_s": cpu_time_s, "load_avg_1m": _load_avg()}
            if traced:
                rec["traced"] = True  # profiled: slower, left out of the step-time median
            if is_eval_step(step, eval_every=args.eval_every, last_step=args.steps):
                t_eval = time.perf_counter()
                rec.update(as_record(evaluate(engine, source, num_batches=args.eval_batches,
                                              generate=model_spec.arch == "encoder-decoder" and step == args.steps)))
                rec["eval_time_s"] = time.perf_counter() - t_eval
            records.append(rec)
            if writer is not None:
                writer.write(rec)
                if args.log_every and (step % args.log_every == 0 or step == args.steps):
                    val = (f" val_loss {rec['val_loss']:.4f} val_ppl {rec['val_perplexity']:.2f}"
                           if "val_loss" in rec else "")
                    print(f"[paraplan] step {step}/{args.steps} loss {loss:.4f} lr {step_lr:.2e} "
                          f"{step_time_s * 1e3:.1f} ms {rec['tokens_per_s']:.0f} tok/s{val}", flush=True)
            if fault and fault["rank"] == rank and fault["step"] == step and fault["mode"] in ("raise", "kill"):
                if fault["mode"] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected fault (PARAPLAN_FAULT) on rank {rank} at step {step}")
            if args.ckpt_every and (step % args.ckpt_every == 0 or step == args.steps):
                hook = None
                if fault and fault["mode"] == "ckpt-kill" and fault["step"] == step:
                    def hook() -> None:
                        if fault["rank"] == rank:
                            os.kill(os.getpid(), signal.SIGKILL)
                        time.sleep(60)  # the others wait here until torchrun stops them
                saved = save_checkpoint(engine.model_parts, engine.optimizer, root=out / CHECKPOINT_DIRNAME,
                                        step=step, trainer_state=trainer_state, keep=args.ckpt_keep,
                                        before_commit=hook)
                if on_checkpoint is not None:
                    on_checkpoint(saved, rec)
    finally:
        if writer is not None:
            writer.close()
    if device.type == "cuda":
        tensor_peak_bytes = memory.peak_bytes()  # the CUDA allocator counts tensors already
    peak = torch.tensor([float(memory.peak_bytes()), float(tensor_peak_bytes), float(memory.reserved_bytes() or 0)],
                        dtype=torch.float64)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    if rank != 0:
        return None
    write_json_atomic(out / MEMORY_FILENAME, {"peak_bytes": peak[0].item(), "tensor_peak_bytes": peak[1].item() or None,
                                              "reserved_bytes": peak[2].item() or None,
                                              "what": "max over ranks; tensor bytes counted in the first step, as a steady step reaches them; "
                                                      "reserved: the CUDA caching allocator's peak"})
    summary = summarize(records, plan=plan, model_name=model_spec.name,
                        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                        backend=backend, world_size=world, training=training, flops_per_step=flops_per_step,
                        peak_flops_per_s=peak_flops, peak_bytes=peak[0].item(),
                        history=read_metrics(out / "metrics.jsonl"))
    data = summary.model_dump(mode="json")
    write_json_atomic(out / "summary.json", data)
    return data


def _tensor_tracker(engine: Any) -> TensorBytesTracker:
    """Live tensor bytes of this rank from now on, seeded with its parameters, buffers and any
    optimizer states (executor.memtrack)."""
    seed = [t for part in engine.model_parts for t in (*part.parameters(), *part.buffers())]
    seed += [v for state in engine.optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return TensorBytesTracker(seed=seed)


def _load_avg() -> float | None:
    """The host's 1-minute load average (runnable processes; shows other users' load), None if unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def write_failure(out: str, exc: BaseException) -> None:
    """Record this rank's failure as `<out>/failures/rank<R>.json` (the launcher names rank and cause)."""
    rank = int(os.environ.get("RANK", "0"))
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
    try:
        write_json_atomic(Path(out) / FAILURES_DIRNAME / f"rank{rank}.json",
                          {"rank": rank, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                           "where": where, "time_unix_s": time.time(),
                           "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))})
    except OSError:
        pass


@record
def main(argv: Sequence[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    die_with_parent()  # torchrun's agent killed outright: this worker ends too (executor.lifetime)
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints every thread's stack (diagnosing a hang)
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        train(args)
    except Exception as exc:
        # no destroy_process_group here: peers may be blocked in a collective; exiting lets torchrun
        # notice the failure and stop them
        write_failure(args.out, exc)
        print(f"[paraplan] rank {os.environ.get('RANK', '0')} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        raise
    if dist.is_initialized():
        dist.barrier()  # every rank is done with its collectives before any tears its process group down
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
