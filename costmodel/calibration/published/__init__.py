"""Validation of the cost model against published training runs (`paraplan validate-published`)."""

from .data import ASSUMPTIONS, Case, find_data_dir, megatron_table1_cases, vtrain_cases
from .doc import update_validation_doc
from .validate import VALIDATION_EFFICIENCY, ValidationResult, predict_case, run_validation, summary_text

__all__ = [
    "ASSUMPTIONS", "Case", "VALIDATION_EFFICIENCY", "ValidationResult", "find_data_dir",
    "megatron_table1_cases", "predict_case", "run_validation", "summary_text", "update_validation_doc",
    "vtrain_cases",
]
