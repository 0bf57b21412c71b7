"""Kubernetes: a Kubeflow PyTorchJob (training operator v1, elastic c10d rendezvous) or a JobSet
(jobset.x-k8s.io/v1alpha2, an Indexed Job per replicated job), each preceded by a ConfigMap holding the
plan (and a model given as a file). `kubectl apply -f FILE` applies both.

The manifests are built from published models, not hand-written dicts: the Kubernetes Python client's
OpenAPI models (pod, container, volumes, ConfigMap) and the Kubeflow training SDK's PyTorchJob models;
the JobSet goes through the Kubeflow Trainer API's JobSet models (pydantic). `round_trip` parses a
manifest back through the same models, so a misspelt or misplaced field cannot pass unnoticed.

Sizing from the plan: one pod per node with `procs_per_node` GPUs (`nvidia.com/gpu` limits) or CPUs,
torchrun with that many workers, a memory-backed /dev/shm (NCCL's shared-memory transport and data
loader workers need more than the container runtime's 64 MiB default), restarts from the plan's
`max_restarts`, and the run directory on a PersistentVolumeClaim (`pvc`; ReadWriteMany when nodes > 1,
since every rank writes its checkpoint shards there)."""

from __future__ import annotations

from typing import Any

import yaml

from .spec import LaunchSpec

__all__ = ["CONFIG_DIR", "RUNS_DIR", "manifests", "pytorchjob", "jobset", "config_map", "round_trip", "to_yaml",
           "require_models"]

CONFIG_DIR = "/etc/paraplan"
"""Where the ConfigMap (plan.json, model.json) is mounted in the container."""
RUNS_DIR = "/runs"
"""Where the run-directory volume is mounted (the default --out is /runs/<name>)."""
KINDS = ("pytorchjob", "jobset")
_CONTAINER = "pytorch"  # the training operator finds the training container of a PyTorchJob by this name


def require_models() -> tuple[Any, Any]:
    """(kubernetes.client, kubeflow.training models), or ValueError saying what to install."""
    try:
        from kubeflow.training import models as kubeflow_models
        from kubernetes import client
    except ImportError as exc:
        raise ValueError(f"kubernetes: the manifest models are not installed ({exc.name}); "
                         "pip install 'paraplan[kubernetes]'") from None
    return client, kubeflow_models


def _check(spec: LaunchSpec) -> None:
    if not spec.out_dir.startswith(RUNS_DIR + "/"):
        raise ValueError(f"out={spec.out_dir!r}: on Kubernetes the run directory lives on the volume mounted at "
                         f"{RUNS_DIR}; give --out {RUNS_DIR}/NAME")
    if spec.nodes > 1 and spec.ckpt_every > 0 and not spec.pvc:
        raise ValueError(f"pvc: {spec.nodes} pods write one checkpoint together, so the run directory needs a "
                         "shared volume; pass --pvc CLAIM (a ReadWriteMany PersistentVolumeClaim), or "
                         "--ckpt-every 0 for a run without checkpoints")


def config_map(spec: LaunchSpec) -> Any:
    client, _ = require_models()
    data = {"plan.json": spec.plan.model_dump_json(indent=2)}
    if not isinstance(spec.model, str):
        data["model.json"] = spec.model.model_dump_json(indent=2)
    return client.V1ConfigMap(api_version="v1", kind="ConfigMap", data=data,
                              metadata=client.V1ObjectMeta(name=f"{spec.name}-plan", namespace=spec.namespace,
                                                           labels=_labels(spec)))


def _labels(spec: LaunchSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "paraplan", "app.kubernetes.io/instance": spec.name}


def _pod_template(spec: LaunchSpec, command: list[str], *, restart_policy: str | None = None) -> Any:
    """One node: the torchrun container with its GPUs, /dev/shm, the plan and the run directory."""
    client, _ = require_models()
    device = {"nvidia.com/gpu": str(spec.procs_per_node)} if spec.gpu else {"cpu": str(spec.procs_per_node)}
    runs = (client.V1Volume(name="runs", persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
        claim_name=spec.pvc)) if spec.pvc else client.V1Volume(name="runs", empty_dir=client.V1EmptyDirVolumeSource()))
    container = client.V1Container(
        name=_CONTAINER, image=spec.image, image_pull_policy="IfNotPresent", command=command,
        env=[client.V1EnvVar(name=k, value=v) for k, v in sorted(spec.env.items())],
        resources=client.V1ResourceRequirements(limits=device, requests=device),
        volume_mounts=[client.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
                       client.V1VolumeMount(name="plan", mount_path=CONFIG_DIR, read_only=True),
                       client.V1VolumeMount(name="runs", mount_path=RUNS_DIR)])
    volumes = [client.V1Volume(name="dshm", empty_dir=client.V1EmptyDirVolumeSource(medium="Memory")),
               client.V1Volume(name="plan", config_map=client.V1ConfigMapVolumeSource(name=f"{spec.name}-plan")),
               runs]
    return client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=_labels(spec)),
                                    spec=client.V1PodSpec(containers=[container], volumes=volumes,
                                                          restart_policy=restart_policy))


def _worker(spec: LaunchSpec) -> list[str]:
    return spec.worker_args(plan_path=f"{CONFIG_DIR}/plan.json", model_path=spec.model_ref(CONFIG_DIR))


def pytorchjob(spec: LaunchSpec) -> Any:
    """The Kubeflow PyTorchJob: `nodes` Worker pods under an elastic policy (c10d rendezvous on worker 0,
    which the operator passes to torchrun as PET_RDZV_* variables), restarted on failure."""
    _check(spec)
    client, kf = require_models()
    command = spec.torchrun_args() + _worker(spec)
    replica = kf.KubeflowOrgV1ReplicaSpec(replicas=spec.nodes, restart_policy="OnFailure",
                                          template=_pod_template(spec, command))
    return kf.KubeflowOrgV1PyTorchJob(
        api_version="kubeflow.org/v1", kind="PyTorchJob",
        metadata=client.V1ObjectMeta(name=spec.name, namespace=spec.namespace, labels=_labels(spec)),
        spec=kf.KubeflowOrgV1PyTorchJobSpec(
            elastic_policy=kf.KubeflowOrgV1ElasticPolicy(rdzv_backend="c10d", min_replicas=spec.nodes,
                                                         max_replicas=spec.nodes, max_restarts=spec.max_restarts),
            nproc_per_node=str(spec.procs_per_node),
            pytorch_replica_specs={"Worker": replica},
            run_policy=kf.KubeflowOrgV1RunPolicy(clean_pod_policy="None", backoff_limit=spec.max_restarts)))


def jobset(spec: LaunchSpec) -> Any:
    """The JobSet: one Indexed Job of `nodes` pods with DNS hostnames; pod 0 (<name>-node-0-0.<name>)
    hosts the c10d rendezvous; the whole set restarts up to `max_restarts` times."""
    _check(spec)
    client, _ = require_models()
    from kubeflow_trainer_api import models as jm

    head = f"{spec.name}-node-0-0.{spec.name}"
    command = (spec.torchrun_args() + ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{head}:{spec.rdzv_port}",
                                       "--rdzv-id", spec.name] + _worker(spec))
    pod = client.ApiClient().sanitize_for_serialization(_pod_template(spec, command, restart_policy="Never"))
    return jm.JobsetV1alpha2JobSet(
        api_version="jobset.x-k8s.io/v1alpha2", kind="JobSet",
        metadata=jm.IoK8sApimachineryPkgApisMetaV1ObjectMeta(name=spec.name, namespace=spec.namespace,
                                                             labels=_labels(spec)),
        spec=jm.JobsetV1alpha2JobSetSpec(
            failure_policy=jm.JobsetV1alpha2FailurePolicy(max_restarts=spec.max_restarts),
            network=jm.JobsetV1alpha2Network(enable_dns_hostnames=True),
            replicated_jobs=[jm.JobsetV1alpha2ReplicatedJob(
                name="node", replicas=1,
                template=jm.IoK8sApiBatchV1JobTemplateSpec(spec=jm.IoK8sApiBatchV1JobSpec(
                    parallelism=spec.nodes, completions=spec.nodes, completion_mode="Indexed", backoff_limit=0,
                    template=jm.IoK8sApiCoreV1PodTemplateSpec.from_dict(pod))))]))


def _as_dict(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "to_dict") and hasattr(obj, "model_dump"):  # the Trainer API's pydantic models
        return obj.to_dict()
    client, _ = require_models()
    return client.ApiClient().sanitize_for_serialization(obj)


def manifests(spec: LaunchSpec, *, kind: str = "pytorchjob") -> list[dict[str, Any]]:
    """[ConfigMap, PyTorchJob or JobSet] as plain dicts (what `kubectl apply -f` reads)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(KINDS)}")
    job = pytorchjob(spec) if kind == "pytorchjob" else jobset(spec)
    return [_as_dict(config_map(spec)), _as_dict(job)]


class _FakeResponse:
    """What the SDKs' ApiClient.deserialize reads (their own tests use the same shape)."""

    def __init__(self, data: str) -> None:
        self.data = data


def round_trip(doc: dict[str, Any]) -> dict[str, Any]:
    """Parse a manifest back through its kind's published model and serialize it again: fields the model
    does not know are dropped, so the result equals `doc` only when every field is one of the model's."""
    import json

    client, _ = require_models()
    kind = doc.get("kind")
    if kind == "JobSet":
        from kubeflow_trainer_api import models as jm

        return jm.JobsetV1alpha2JobSet.from_dict(doc).to_dict()
    if kind == "PyTorchJob":
        from kubeflow.training import ApiClient

        api = ApiClient()
        return api.sanitize_for_serialization(api.deserialize(_FakeResponse(json.dumps(doc)),
                                                              "KubeflowOrgV1PyTorchJob"))
    if kind == "ConfigMap":
        api = client.ApiClient()
        return api.sanitize_for_serialization(api.deserialize(_FakeResponse(json.dumps(doc)), "V1ConfigMap"))
    raise ValueError(f"kind={kind!r}: not a manifest paraplan writes")


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """The documents as one YAML stream (keys in the models' order)."""
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
