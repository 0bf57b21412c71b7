"""What the fuzz suite (tests/_fuzz.py) checks of a result: every number finite and non-negative
(NaN only where the API documents it), `estimate_batch` rows equal to `estimate`, and a command
line's exit code and output (one `paraplan: error:` line on exit 2, never a traceback)."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from costmodel import (
    ClusterSpec,
    ModelSpec,
    ParallelPlan,
    StepEstimate,
    TrainingSpec,
    estimate,
    format_validation_error,
)
from planner import SearchResult

__all__ = ["Defect", "expect", "check_batch", "check_numbers", "check_cli", "message", "MAX_MESSAGE"]

MAX_MESSAGE = 2000
"""Longest error message accepted as 'one line'."""


class Defect(AssertionError):
    """A property the call broke."""


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise Defect(what)


def check_batch(out: dict[str, np.ndarray], plans: list[ParallelPlan], model: ModelSpec, cluster: ClusterSpec,
                 training: TrainingSpec) -> None:
    """Valid rows hold `estimate`'s figures; invalid rows NaN."""
    for i, plan in enumerate(plans):
        if not out["valid"][i]:
            expect(bool(np.isnan(out["step_time_s"][i])), f"estimate_batch: invalid row {i} is not NaN")
            continue
        try:
            one = estimate(model, cluster, training, plan)
        except ValueError as exc:
            raise Defect(f"estimate_batch: row {i} valid, estimate refuses it: {message(exc)}") from None
        for name, got in (("step_time_s", one.step_time_s), ("peak_bytes", one.memory.peak_bytes)):
            expect(math.isclose(float(out[name][i]), got, rel_tol=1e-6, abs_tol=1e-12),
                    f"estimate_batch: row {i} {name} {float(out[name][i])!r} != estimate's {got!r}")


def check_numbers(value: Any, where: str = "result") -> None:
    """Every number in `value` (specs, estimates, search results, frames, arrays) finite and >= 0,
    but for a timeline event's micro_batch (-1: not tied to one), a sweep point or batch row without
    a plan (NaN, with a message) and flags."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float, np.integer, np.floating)):
        expect(math.isfinite(float(value)) and float(value) >= 0, f"{where} = {value!r}")
        return
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fiu":
            expect(bool(np.all(np.isfinite(value) & (value >= 0))), f"{where} holds {value[~(np.isfinite(value) & (value >= 0))][:3]}")
        return
    if isinstance(value, pd.DataFrame):
        for col in value.columns:
            if value[col].dtype.kind in "fiu":
                rows = value[col].to_numpy(dtype=float)
                nan = np.isnan(rows)
                if nan.any():
                    expect("message" in value.columns and bool((value["message"][nan].astype(str) != "").all()),
                            f"{where}.{col} is NaN without a message")
                check_numbers(rows[~nan], f"{where}.{col}")
        return
    if isinstance(value, SearchResult):
        for name in ("plans", "pareto_memory", "pareto_gpus"):
            for r in getattr(value, name):
                check_numbers(r.estimate, f"{where}.{name}[{r.rank}]")
        check_numbers(list(value.rejections.values()), f"{where}.rejections")
        check_numbers([value.num_candidates, value.num_valid, value.num_fit, value.elapsed_s], where)
        check_numbers(value.to_frame(), f"{where}.to_frame()")
        expect(bool(value.plans) or bool(value.message), "search: no plan and no message")
        return
    if isinstance(value, StepEstimate):
        expect(value.step_time_s > 0, "step_time_s <= 0")
        expect(math.isclose(value.time.total_s, value.step_time_s, rel_tol=1e-9), "time parts do not sum to step_time_s")
        for e in value.timeline:
            expect(math.isfinite(e.start_s) and 0 <= e.start_s <= e.end_s and math.isfinite(e.end_s),
                    f"timeline event {e}")
        check_numbers(value.model_dump(exclude={"timeline"}), where)
        return
    if isinstance(value, BaseModel):
        check_numbers(value.model_dump(), where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            check_numbers(v, f"{where}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_numbers(v, f"{where}[{i}]")
        return
    raise Defect(f"{where}: unexpected result type {type(value).__name__}")




_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w+Error: ", re.M)
_BAD_NUMBER = re.compile(r"(?<![\w.])(nan|inf|-inf)(?![\w])", re.I)


def check_cli(code: int, out: str, err: str, argv: list[str]) -> None:
    expect(not _TRACEBACK.search(err) and not _TRACEBACK.search(out), f"traceback: {err[-800:]}")
    if code == 2:
        lines = err.strip().splitlines()
        expect(len(lines) == 1 and lines[0].startswith("paraplan: error: "), f"exit 2 without one error line: {err[:800]!r}")
        expect(len(lines[0]) <= MAX_MESSAGE, "error line too long")
        expect("out of memory" not in lines[0], "ran out of memory")
        return
    expect(code in (0, 1), f"exit code {code}: {err[-800:]!r}")
    expect(not [ln for ln in err.splitlines() if ln.startswith("paraplan: error")], f"exit {code} with an error line")
    if "--json" in argv and argv[0] == "estimate" and code == 0:
        check_numbers(StepEstimate.model_validate_json(out), "estimate --json")
    else:
        expect(not _BAD_NUMBER.search(out), f"non-finite number in output: {out[:800]!r}")




def message(exc: BaseException) -> str:
    """The one-line text of a refusal (a pydantic ValidationError as `format_validation_error`)."""
    return format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
