"""`paraplan launch` without a cluster: what each target writes (sizes, rendezvous, environment), the
Kubernetes manifests pinned by golden files and parsed back through the published models, and bad input
(a plan larger than the nodes, missing sbatch/kubectl/Ray, an unreachable rendezvous) ending in one line
with exit code 2 and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from costmodel import ParallelPlan, save_plan
from executor.launch import free_port, prepare_launch, render_launch, write_launch
from executor.launch.kubernetes import manifests, round_trip, to_yaml
from planner.cli import main

GOLDEN = Path(__file__).parent / "golden"
BIG = ParallelPlan(dp=4, tp=8, pp=2)  # 64 GPUs: 8 DGX H100 nodes


def _cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("paraplan: error: "), err
    return lines[0]


def _k8s_spec(**options):
    return prepare_launch(BIG, on="kubernetes", model="llama3-70b", cluster="dgx-h100", steps=1000,
                          global_batch=64, seq_len=4096, pvc="paraplan-runs", namespace="training", **options)


@pytest.mark.parametrize("kind", ["pytorchjob", "jobset"])
def test_kubernetes_manifests_match_the_golden_files_and_round_trip(kind):
    docs = manifests(_k8s_spec(), kind=kind)
    text = to_yaml(docs)
    golden = GOLDEN / f"launch_{kind}.yaml"
    if os.environ.get("PARAPLAN_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"regenerate with PARAPLAN_UPDATE_GOLDEN=1 if the change is intended ({golden})"
    for doc in yaml.safe_load_all(golden.read_text()):
        assert round_trip(doc) == doc  # every field is one the published model knows
    config, job = docs
    assert config["kind"] == "ConfigMap" and ParallelPlan.model_validate_json(config["data"]["plan.json"]) == BIG
    pod = (job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"] if kind == "pytorchjob" else
           job["spec"]["replicatedJobs"][0]["template"]["spec"]["template"])
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    assert {"emptyDir": {"medium": "Memory"}, "name": "dshm"} in pod["spec"]["volumes"]
    assert {"name": "runs", "persistentVolumeClaim": {"claimName": "paraplan-runs"}} in pod["spec"]["volumes"]
    command = container["command"]
    assert command[command.index("--nnodes") + 1] == "8" and command[command.index("--nproc-per-node") + 1] == "8"
    assert command[command.index("--max-restarts") + 1] == "3" and "--auto-resume" in command
    assert {"name": "NCCL_CROSS_NIC", "value": "0"} in container["env"]  # rail-optimized InfiniBand
    if kind == "pytorchjob":
        assert job["spec"]["elasticPolicy"] == {"maxReplicas": 8, "maxRestarts": 3, "minReplicas": 8,
                                                "rdzvBackend": "c10d"}
        assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] == "OnFailure"
    else:
        assert job["spec"]["failurePolicy"] == {"maxRestarts": 3}
        assert job["spec"]["replicatedJobs"][0]["template"]["spec"]["completions"] == 8


def test_round_trip_catches_a_field_the_model_does_not_know():
    _, job = manifests(_k8s_spec(), kind="pytorchjob")
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicyy"] = "Never"
    assert round_trip(job) != job
    _, jobset = manifests(_k8s_spec(), kind="jobset")
    jobset["spec"]["replicatedJobs"][0]["replica"] = 2
    assert round_trip(jobset) != jobset


def test_slurm_script_sizes_the_job_from_the_plan(tmp_path):
    spec = prepare_launch(BIG, on="slurm", model="llama3-70b", cluster="dgx-h100", steps=1000, global_batch=64,
                          seq_len=4096, partition="gpu", time_limit="24:00:00", out=str(tmp_path / "run"))
    text = render_launch(spec).text
    for directive in ("--nodes=8", "--ntasks-per-node=1", "--gpus-per-node=8", "--exclusive", "--requeue",
                      "--partition=gpu", "--time=24:00:00"):
        assert f"#SBATCH {directive}\n" in text
    assert "srun --kill-on-bad-exit=1" in text and "--rdzv-endpoint $head_node:29500" in text
    assert "--rdzv-id $SLURM_JOB_ID" in text and "--auto-resume" in text and "export NCCL_CROSS_NIC=0" in text
    path = write_launch(spec, tmp_path / "job.sbatch")
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0  # valid shell
    assert os.access(path, os.X_OK)


def test_torchrun_script_is_the_same_on_every_node(tmp_path):
    spec = prepare_launch(ParallelPlan(dp=2, tp=8), on="torchrun", model="llama3-8b", cluster="dgx-a100",
                          rdzv_host="node0.example", out=str(tmp_path / "run"), global_batch=16, seq_len=2048)
    assert (spec.nodes, spec.procs_per_node) == (2, 8)
    text = render_launch(spec).text
    assert "--nnodes 2 --nproc-per-node 8" in text and "--rdzv-endpoint node0.example:29500" in text
    assert "--local-addr" not in text and "GLOO_SOCKET_IFNAME" not in text
    path = write_launch(spec, tmp_path / "node.sh")
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0


def test_ray_driver_compiles_and_carries_the_spec(tmp_path):
    spec = prepare_launch(ParallelPlan(dp=2), on="ray", cluster="cpu", out=str(tmp_path / "run"))
    path = write_launch(spec, tmp_path / "driver.py")
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # the driver's body stays under __main__
    assert namespace["LaunchSpec"].model_validate(namespace["SPEC"]) == spec


@pytest.mark.parametrize("argv, field", [
    (["--on", "slurm", "--nodes", "1", "--gpus-per-node", "4"], "nodes"),          # 16 processes on 4 GPUs
    (["--on", "slurm", "--nodes", "4", "--gpus-per-node", "8"], "nodes"),          # 32 GPUs for 16 processes
    (["--on", "torchrun", "--nodes", "2"], "rdzv_host"),
    (["--on", "kubernetes", "--nodes", "2"], "pvc"),                               # two pods share checkpoints
    (["--on", "kubernetes", "--out", "/data/x"], "out"),
    (["--on", "slurm", "--lr", "nan"], "lr"),
    (["--on", "slurm", "--env", "NOEQUALS"], "env"),
    (["--on", "ray", "--steps", "-3"], "steps"),
    (["--on", "slurm", "--dtype", "fp16"], "dtype"),                               # no loss scaling
    (["--on", "slurm", "--cluster", "cpu", "--nodes", "4", "--gpus-per-node", "4", "--dtype", "bf16"], "dtype"),
    (["--on", "slurm", "--eval-every", "0"], "eval_every"),
])
def test_bad_launches_end_in_one_line_and_write_nothing(tmp_path, capsys, argv, field):
    plan = save_plan(ParallelPlan(dp=8, tp=2), tmp_path / "plan.json")
    target = tmp_path / "out.file"
    code, _, err = _cli(["launch", str(plan), *argv, "--file", str(target)], capsys)
    assert code == 2 and _one_error_line(err).startswith(f"paraplan: error: {field}")
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_existing_file_is_replaced_only_with_overwrite(tmp_path, capsys):
    plan = save_plan(ParallelPlan(dp=2), tmp_path / "plan.json")
    target = tmp_path / "job.sbatch"
    target.write_text("mine")
    code, _, err = _cli(["launch", str(plan), "--on", "slurm", "--file", str(target)], capsys)
    assert code == 2 and "--overwrite" in _one_error_line(err) and target.read_text() == "mine"
    code, out, _ = _cli(["launch", str(plan), "--on", "slurm", "--file", str(target), "--overwrite"], capsys)
    assert code == 0 and out.strip() == f"sbatch {target}" and target.read_text().startswith("#!/bin/bash")


@pytest.mark.parametrize("target, extra, blocked, path, message", [
    ("slurm", [], None, True, "sbatch not found"),
    ("kubernetes", [], None, True, "kubectl not found"),
    ("ray", [], "ray", False, "pip install 'paraplan[ray]'"),
    ("kubernetes", [], "kubernetes", False, "pip install 'paraplan[kubernetes]'"),
    ("torchrun", ["--nodes", "2", "--rdzv-host", "no-such-node.invalid"], None, False, "cannot resolve host"),
    ("ray", ["--ray-address", f"127.0.0.1:{free_port()}"], None, False, "nothing answers at 127.0.0.1"),
], ids=["no-sbatch", "no-kubectl", "no-ray", "no-kubernetes-models", "unknown-rdzv-host", "unreachable-ray"])
def test_what_a_submission_needs_is_checked_before_writing(tmp_path, capsys, monkeypatch, target, extra, blocked,
                                                           path, message):
    if path:  # a machine without Slurm's or Kubernetes' clients: only Python's folder on PATH
        monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    if blocked:  # as if the package were not installed (None in sys.modules makes its import fail)
        for name in [m for m in sys.modules if m == blocked or m.startswith(blocked + ".")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, blocked, None)
    plan = save_plan(ParallelPlan(dp=2), tmp_path / "plan.json")
    code, _, err = _cli(["launch", str(plan), "--on", target, "--cluster", "cpu", "--submit", *extra,
                         "--file", str(tmp_path / "job")], capsys)
    assert code == 2 and message in _one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_status_needs_a_job_id(capsys):
    code, _, err = _cli(["launch", "--status", "abc"], capsys)
    assert code == 2 and "not a Slurm job id" in _one_error_line(err)
    code, _, err = _cli(["launch"], capsys)
    assert code == 2 and "--on" in _one_error_line(err)


def test_the_cli_offers_the_executors_targets_and_the_api_is_exported():
    import executor
    from executor.launch import TARGETS
    from planner.cli import LAUNCH_TARGETS

    assert tuple(LAUNCH_TARGETS) == TARGETS
    assert executor.prepare_launch is prepare_launch and callable(executor.job_status)


def test_the_executors_rules_are_those_of_the_target_clusters_device(tmp_path):
    """A launch is checked with `costmodel.step.runnable` on the target's device, not this host's: torch's
    ring attention (CUDA only) is accepted for a GPU cluster and refused for the CPU preset."""
    ring = ParallelPlan(dp=2, cp=2, cp_attention="ring")
    spec = prepare_launch(ring, on="slurm", model="tiny-llama", cluster="dgx-h100", steps=10, global_batch=8,
                          seq_len=64, out=str(tmp_path / "run"))
    assert spec.plan == ring and spec.gpu is not None
    with pytest.raises(ValueError, match="cp_attention: 'ring' runs torch's ring attention"):
        prepare_launch(ring, on="slurm", model="tiny-llama", cluster="cpu", steps=10, global_batch=8, seq_len=64,
                       out=str(tmp_path / "cpu"))


def test_the_workers_get_the_dtype_and_the_validation_settings(tmp_path):
    spec = prepare_launch(ParallelPlan(dp=8, tp=2), on="slurm", cluster="dgx-h100", dtype="fp8", eval_every=25,
                          eval_batches=4, out=str(tmp_path / "run"))
    args = spec.worker_args(plan_path="p.json", model_path="m")
    assert args[args.index("--dtype") + 1] == "fp8"
    assert args[args.index("--eval-every") + 1] == "25" and args[args.index("--eval-batches") + 1] == "4"


def test_t5_launches_like_the_decoders(tmp_path):
    """Every family `paraplan run` trains can be launched (the encoder-decoder is built by executor.families)."""
    spec = prepare_launch(ParallelPlan(dp=2), on="torchrun", cluster="cpu", model="tiny-t5", out=str(tmp_path / "run"))
    assert spec.model == "tiny-t5" and spec.world_size == 2
