"""The shared vocabulary: pydantic specs (frozen, unknown fields rejected)."""

from ._base import Spec, format_validation_error
from .hardware import ClusterSpec, Dtype, GPUSpec, LinkSpec
from .model import Activation, Arch, ModelSpec
from .plan import AXES, ParallelPlan, Recompute, Schedule, load_plan, save_plan
from .results import (
    MemoryBreakdown,
    Rejection,
    StepEstimate,
    StepMeasurement,
    TimeBreakdown,
    TimelineEvent,
    ValidationResult,
)
from .training import TrainingSpec

__all__ = [
    "AXES", "Activation", "Arch", "ClusterSpec", "Dtype", "GPUSpec", "LinkSpec", "MemoryBreakdown",
    "ModelSpec", "ParallelPlan", "Recompute", "Rejection", "Schedule", "Spec", "StepEstimate",
    "StepMeasurement", "TimeBreakdown", "TimelineEvent", "TrainingSpec", "ValidationResult", "format_validation_error",
    "load_plan", "save_plan",
]
