"""paraplan's cost model: specs, catalog, and the prediction of a plan's step time and memory.

    from costmodel import estimate, load_model, get_cluster, TrainingSpec, ParallelPlan
"""

from .catalog import (
    get_cluster,
    get_gpu,
    get_link,
    list_clusters,
    list_gpus,
    list_links,
    list_models,
    load_model,
    model_from_hf_config,
)
from .layer.compute import EfficiencyModel
from .specs import (
    ClusterSpec,
    GPUSpec,
    LinkSpec,
    MemoryBreakdown,
    ModelSpec,
    ParallelPlan,
    Rejection,
    StepEstimate,
    StepMeasurement,
    TimeBreakdown,
    TimelineEvent,
    TrainingSpec,
    format_validation_error,
    load_plan,
    save_plan,
)
from .step.batch import estimate_batch
from .step.checks import PlanError, check_plan, plan_problems
from .step.estimate import estimate
from .step.feasibility import evaluate
from .step.runnable import device_kind, executor_unsupported

__all__ = [
    "EfficiencyModel", "estimate", "estimate_batch", "evaluate",
    "ClusterSpec", "GPUSpec", "LinkSpec", "MemoryBreakdown", "ModelSpec", "ParallelPlan", "PlanError",
    "Rejection", "StepEstimate", "StepMeasurement", "TimeBreakdown", "TimelineEvent", "TrainingSpec",
    "check_plan", "device_kind", "executor_unsupported", "format_validation_error", "get_cluster", "get_gpu", "get_link", "list_clusters",
    "list_gpus", "list_links", "list_models", "load_model", "load_plan", "model_from_hf_config",
    "plan_problems", "save_plan",
]
