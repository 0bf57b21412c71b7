"""The closed loop (`paraplan validate --local`): run plans of a small model on this machine, predict each
with the cost model and this machine's profile, and score the predictions (metrics, report, doc section)."""

from .host import LocalPredictor, host_constants, work_span_step_s
from .validate import LocalValidation, run_local_validation, select_plans

__all__ = ["LocalPredictor", "LocalValidation", "host_constants", "run_local_validation", "select_plans",
           "work_span_step_s"]
