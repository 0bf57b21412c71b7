"""Ray: a Ray Train `TorchTrainer` whose workers run the executor's training loop (`executor.train.train`)
for the plan. Ray starts the workers and their process group (Gloo on CPU; Gloo for CPU tensors plus NCCL
on GPUs); the loop is the same as under torchrun, so the losses are the same.

Sizing: `ScalingConfig(num_workers=world size, one GPU or CPU each)`. Storage: the run directory is Ray's
experiment directory (`RunConfig(storage_path=parent, name=basename)`), on a filesystem every node
shares; checkpoints are written there by DCP and reported to Ray in place (rank 0 reports the complete
step directory, `CheckpointUploadMode.NO_UPLOAD`), so when Ray restarts a failed worker group
(`FailureConfig(max_failures=max_restarts)`) it hands back the newest one (`ray.train.get_checkpoint`)
and the loop resumes from it.

A local Ray instance started here (no address) binds to the loopback only."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from ..metrics import read_metrics, write_json_atomic
from .rendezvous import wait_for_endpoint
from .settings import PACKAGE_ROOT
from .spec import LaunchSpec

__all__ = ["require_ray", "check_address", "fit", "driver_script", "train_loop_per_worker"]


def require_ray(*, local: bool = False) -> Any:
    """The `ray` module with Ray Train, or ValueError saying what to install. `local`: keep a Ray instance
    this process starts on the loopback (set before Ray is imported)."""
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's local-only mode: 127.0.0.1
    try:
        import ray
        import ray.train  # noqa: F401
        import ray.train.torch  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"ray: Ray Train is not installed ({exc.name}); pip install 'paraplan[ray]'") from None
    return ray


def check_address(address: str | None, *, timeout_s: float = 3.0) -> None:
    """A Ray cluster given as HOST:PORT or ray://HOST:PORT must answer: `ray.init` would otherwise wait for
    minutes. None, 'auto' and 'local' are Ray's own look-ups (they fail fast)."""
    if address in (None, "auto", "local"):
        return
    target = address.split("://", 1)[1] if "://" in address else address
    if ":" not in target:
        raise ValueError(f"ray_address={address!r}: give HOST:PORT (the head's GCS, e.g. head:6379), "
                         "ray://HOST:10001 or auto")
    wait_for_endpoint(target, timeout_s=timeout_s, field="ray_address",
                      hint="start the Ray head (ray start --head) or fix --ray-address")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the executor's training loop on this rank, reporting each checkpoint."""
    import ray.train

    from ..checkpoint import latest_checkpoint
    from ..train import build_arg_parser, train, write_failure

    spec = LaunchSpec.model_validate(config["spec"])
    rank = ray.train.get_context().get_world_rank()
    argv = spec.worker_args(plan_path=f"{spec.out_dir}/plan.json", model_path=spec.model_ref(spec.out_dir))[2:]
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as resume:
        if resume is not None:
            argv += ["--resume", str(resume)]
        args = build_arg_parser().parse_args(argv)

        def report(path: Path, record: dict[str, Any]) -> None:
            ray.train.report({"step": record["step"], "loss": record["loss"]},
                             checkpoint=ray.train.Checkpoint.from_directory(str(path)) if rank == 0 else None,
                             checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD)

        # Ray does not count group restarts: 1 marks any attempt that starts from a checkpoint, Ray's or the
        # run directory's own (a report Ray had not collected when a worker died is still on disk there)
        restarted = checkpoint is not None or latest_checkpoint(spec.out_dir) is not None
        try:
            train(args, on_checkpoint=report, attempt=int(restarted))
        except Exception as exc:
            write_failure(args.out, exc)
            raise


def _job_files(spec: LaunchSpec) -> None:
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "plan.json", spec.plan.model_dump(mode="json"))
    if not isinstance(spec.model, str):
        write_json_atomic(out / "model.json", spec.model.model_dump(mode="json"))


def fit(spec: LaunchSpec, *, address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Run `spec` with Ray Train on the cluster at `address` ('auto', 'ray://HOST:10001', or None: start a
    local instance with `num_cpus`). Returns {'summary', 'metrics', 'checkpoint'}; ValueError when Ray is
    missing or the cluster cannot be reached; RuntimeError when training fails."""
    address = address or spec.ray_address
    ray = require_ray(local=address is None)
    check_address(address)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    started = not ray.is_initialized()
    if started:
        runtime_env = {"env_vars": {**spec.env, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}}
        try:
            if address is None:
                ray.init(num_cpus=num_cpus or spec.world_size, include_dashboard=False, runtime_env=runtime_env,
                         object_store_memory=256 * 1024**2, log_to_driver=True)
            else:
                ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            raise ValueError(f"ray_address: cannot reach the Ray cluster at {address!r} ({str(exc).splitlines()[0]})"
                             "; start it (ray start --head) or fix --ray-address") from None
    out = Path(spec.out_dir)
    try:
        _job_files(spec)
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config={"spec": spec.model_dump(mode="json")},
            torch_config=TorchConfig(backend="cpu:gloo,cuda:nccl" if spec.gpu else "gloo",
                                     timeout_s=int(spec.timeout_s)),
            scaling_config=ScalingConfig(num_workers=spec.world_size, use_gpu=spec.gpu is not None,
                                         resources_per_worker={"GPU": 1} if spec.gpu else {"CPU": 1}),
            run_config=RunConfig(name=out.name, storage_path=str(out.parent),
                                 failure_config=FailureConfig(max_failures=spec.max_restarts),
                                 checkpoint_config=CheckpointConfig(num_to_keep=None)))
        try:
            result = trainer.fit()
        except Exception as exc:  # Ray wraps the worker's error; the worker wrote failures/rank<R>.json
            raise RuntimeError(f"Ray Train failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}; "
                               f"see {out / 'failures'}") from exc
    finally:
        if started:
            ray.shutdown()
    summary_path = out / "summary.json"
    return {"summary": json.loads(summary_path.read_text()) if summary_path.is_file() else None,
            "metrics": read_metrics(out / "metrics.jsonl"),
            "checkpoint": result.checkpoint.path if result.checkpoint is not None else None}


def driver_script(spec: LaunchSpec) -> str:
    """A Python driver for the Ray cluster's head node: `python FILE [--address auto]` (or `ray job submit
    -- python FILE`); it calls `fit` with the spec embedded here."""
    payload = json.dumps(spec.model_dump(mode="json"), indent=1, sort_keys=True)
    return "\n".join([
        "#!/usr/bin/env python",
        f'"""paraplan launch --on ray: {spec.summary_line()}.',
        "",
        "Run on the Ray cluster's head node: `python THIS_FILE --address auto` (or without --address for a",
        "local Ray instance); paraplan and its torch must be installed on every node, and the run directory",
        f"{spec.out_dir} must be on a filesystem all nodes share (Ray Train's storage path).\"\"\"",
        "",
        "import argparse",
        "import json",
        "",
        "from executor.launch.ray_train import fit",
        "from executor.launch.spec import LaunchSpec",
        "",
        f"SPEC = json.loads(r'''{payload}''')",
        "",
        'if __name__ == "__main__":',
        "    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])",
        '    parser.add_argument("--address", default=None, help="Ray cluster address (default: a local instance)")',
        "    args = parser.parse_args()",
        '    result = fit(LaunchSpec.model_validate(SPEC), address=args.address)',
        '    print(json.dumps(result["summary"], indent=2))',
        ""])

