"""Measurements to fit on, and the calibration profile a fit is saved as.

- `observations_from_summaries`: the executor's `summary.json` files (`StepMeasurement`), priced on the
  cluster the run used: the `cpu` preset sized to the run's processes for CPU runs (Gloo, one process
  per 'GPU', fp32), else the preset whose GPU matches the device name (bf16).
- `vtrain_observations`: vTrain's measured A100 iteration times (Bang et al., MICRO 2024), with the
  same assumptions as `costmodel.calibration.published` (full recomputation, 1F1B, no bucketing, fp16).
- `fitted_profile`: a `CalibrationProfile` carrying the fitted constants (on top of a measured profile
  when one is given), which `estimate` / `search` take as `calibration=`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..catalog import get_cluster, list_clusters, load_model
from ..specs import ClusterSpec, StepMeasurement, TrainingSpec, format_validation_error
from .fit import Observation
from .profile_spec import CalibrationProfile

__all__ = [
    "observations_from_summaries",
    "measurement_observation",
    "local_cluster",
    "cluster_for_device",
    "vtrain_observations",
    "fitted_profile",
]


def local_cluster(processes: int, *, name: str = "cpu") -> ClusterSpec:
    """The `name` preset as one node of `processes` 'GPUs' (processes of this host)."""
    if processes < 1:
        raise ValueError(f"processes={processes}: need at least 1")
    base = get_cluster(name, nodes=1)
    return base.model_copy(update={"gpus_per_node": processes})


def cluster_for_device(device: str, world_size: int) -> ClusterSpec:
    """The cluster a run on `device` used: `cpu` for CPU runs, else the first preset (of 8-GPU nodes)
    whose GPU's family appears in the CUDA device name ('NVIDIA H200' -> dgx-h200)."""
    if device.lower() == "cpu":
        return local_cluster(world_size)
    low = device.lower().replace(" ", "").replace("-", "")
    for name in sorted(list_clusters()):
        cluster = get_cluster(name, nodes=1)
        if cluster.gpu.name != "cpu" and cluster.gpu.name.split("-")[0] in low:
            return get_cluster(name, nodes=max(1, math.ceil(world_size / cluster.gpus_per_node)))
    raise ValueError(f"device {device!r}: no cluster preset with this GPU; pass --cluster NAME")


def measurement_observation(
    m: StepMeasurement, *, label: str, cluster: ClusterSpec | None = None, model: Any = None
) -> Observation:
    """One `StepMeasurement` as an Observation (CPU runs are fp32, GPU runs bf16 under autocast, as the
    executor runs; a GPU run is priced with the executor's own stack `paraplan`, whose element-wise bytes
    describe bf16 autocast: CPU runs keep the default stack and the profile's measured host terms)."""
    if m.step_time_s <= 0:
        raise ValueError(f"{label}: step_time_s={m.step_time_s}; the run measured no step")
    spec = model if model is not None else load_model(m.model)
    cpu = m.device.lower() == "cpu"
    training = TrainingSpec(global_batch_size=m.global_batch_size, seq_len=m.seq_len, dtype="fp32" if cpu else "bf16",
                            **({} if cpu else {"stack": "paraplan", "grad_dtype": "fp32"}))
    return Observation(
        label=label,
        model=spec,
        cluster=cluster or cluster_for_device(m.device, m.world_size),
        training=training,
        plan=m.plan,
        step_time_s=m.step_time_s,
        source=m.device,
        peak_bytes=m.peak_bytes,
    )


def observations_from_summaries(
    paths: Iterable[str | os.PathLike[str]], *, cluster: ClusterSpec | None = None
) -> list[Observation]:
    """Observations from summary.json files (or run directories holding one); ValueError naming a bad file."""
    out = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            path = path / "summary.json"
        if not path.is_file():
            raise ValueError(f"{str(path)!r}: no such summary file; pass the summary.json of an executor run")
        try:
            m = StepMeasurement.model_validate(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{str(path)!r} is not valid JSON: {exc}") from None
        except ValidationError as exc:
            raise ValueError(
                f"{str(path)!r}: not a StepMeasurement: {format_validation_error(exc)}"
            ) from None
        out.append(measurement_observation(m, label=str(path), cluster=cluster))
    return out


def vtrain_observations(
    data_dir: str | os.PathLike[str] | None = None, *, which: tuple[str, ...] = ("single", "multi")
) -> list[Observation]:
    """vTrain's measured runs as Observations (from `data_dir`, default the copy shipped with paraplan)."""
    from .published.data import find_data_dir, vtrain_cases

    found = find_data_dir(data_dir)
    out: list[Observation] = []
    for w in which:
        if (found / "vtrain" / f"ground_truth_{w}.csv").is_file():
            out += [
                Observation(
                    label=c.label,
                    model=c.model,
                    cluster=c.cluster,
                    training=c.training,
                    plan=c.plan,
                    step_time_s=c.published,
                    source=c.source,
                )
                for c in vtrain_cases(found, which=w)
            ]
    return out


def fitted_profile(
    constants: dict[str, float],
    *,
    base: CalibrationProfile | None = None,
    device: str = "",
    gpu: str | None = None,
    fit: dict[str, Any] | None = None,
) -> CalibrationProfile:
    """A CalibrationProfile holding `constants` (merged over `base`'s measured curves and constants)."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if base is not None:
        merged = {**base.constants, **constants}
        return CalibrationProfile.model_validate(
            {**base.model_dump(), "constants": merged, "fit": fit or {}, "created_utc": stamp}
        )
    try:
        import importlib.metadata as md

        torch_version = md.version("torch")
    except Exception:  # noqa: BLE001 - the version is informational only
        torch_version = "unknown"
    return CalibrationProfile(
        device=device or (gpu or "unknown"),
        gpu=gpu,
        torch_version=torch_version,
        created_utc=stamp,
        constants=constants,
        fit=fit or {},
    )
