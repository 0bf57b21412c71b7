"""The bounded fuzz profile (hypothesis, derandomized so CI is reproducible): random and hostile specs,
plan, model and config files, search constraints, sweeps and command lines through the public API
and the CLI (tests/_fuzz.py says what is checked and how time and memory are bounded). The long
profile, >= 10,000 cases with fresh seeds, is `python -m benchmarks fuzz` (docs/BENCHMARKS.md)."""

from __future__ import annotations

from _fuzz import Case, api_cases, cli_cases, run_case
from hypothesis import HealthCheck, given, settings

PROFILE = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@settings(max_examples=300, **PROFILE)
@given(api_cases())
def test_every_api_call_answers_or_refuses_in_bounded_time_and_memory(case: Case):
    outcome = run_case(case)
    assert outcome.status != "defect", f"{outcome.detail}\n{case.short()}"


@settings(max_examples=80, **PROFILE)
@given(cli_cases())
def test_every_command_line_answers_or_refuses_with_one_line(case: Case):
    outcome = run_case(case)
    assert outcome.status != "defect", f"{outcome.detail}\n{case.short()}"
