"""The closed loop's section of docs/VALIDATION.md: Markdown tables of a local validation and of a
calibration fit, written between `<!-- closedloop:begin -->` and `<!-- closedloop:end -->` (other
sections of the file are kept byte for byte). Inside it, each part has its own markers
(`<!-- closedloop:local -->`, `<!-- closedloop:calibrate-<name> -->`), so `validate --local` and
`calibrate` update their own part only."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from costmodel.step.report import write_text_atomic

__all__ = ["BEGIN", "END", "update_part", "local_markdown", "fit_markdown"]

BEGIN, END = "<!-- closedloop:begin -->", "<!-- closedloop:end -->"
_HEADER = "## Closed loop: predicted vs measured, calibration, planner regret\n"


def _pct(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{x:.1%}"


def _num(x: Any, fmt: str = ".3f") -> str:
    return "n/a" if x is None or x != x else format(x, fmt)


def update_part(path: str | os.PathLike[str], part: str, text: str) -> Path:
    """Replace (or add) part `part` of the closed-loop section of `path` with `text`, atomically."""
    path = Path(path)
    doc = path.read_text() if path.is_file() else "# Validation\n"
    if BEGIN not in doc or END not in doc:
        doc = doc.rstrip("\n") + f"\n\n{BEGIN}\n{_HEADER}{END}\n"
    head, rest = doc.split(BEGIN, 1)
    section, tail = rest.split(END, 1)
    p_begin, p_end = f"<!-- closedloop:{part} -->", f"<!-- /closedloop:{part} -->"
    block = f"{p_begin}\n{text.strip()}\n{p_end}"
    if p_begin in section and p_end in section:
        section = re.sub(
            re.escape(p_begin) + r".*?" + re.escape(p_end), lambda _m: block, section, flags=re.S
        )
    else:
        section = section.rstrip("\n") + f"\n\n{block}\n"
    write_text_atomic(path, f"{head}{BEGIN}{section}{END}{tail}")
    return path


def local_markdown(
    rows: pd.DataFrame,
    summary: dict[str, Any],
    *,
    command: str,
    csv_name: str,
    runs: list[dict[str, Any]] | None = None,
) -> str:
    """The local validation: command, summary (a priori and leave-one-out calibrated), per-plan table,
    and (with `runs`, the summaries of repeated sweeps) the min-max over repeats."""
    s = summary
    lines = [
        "### Local: every plan run for real on this machine",
        "",
        f"Model `{s.get('model')}`, {s.get('procs')} Gloo processes on CPU, global batch {s.get('global_batch')} x "
        f"seq {s.get('seq_len')}, {s.get('steps')} steps per run (first not timed), {s.get('repeats')} run(s) per plan. "
        f"Reproduce: `{command}`. Per-plan CSV: `{csv_name}`.",
        "",
        "A priori = the cost model with this machine's `paraplan profile` (GEMM/attention/bandwidth, Gloo "
        "collective curves with their CPU cost, eager host cost per block, CPU inflation of concurrent workers) "
        "and the documented host constants derived from it (host time adds to compute; workers share the cores, "
        "work-span bound; no CUDA context), nothing fitted to these runs. "
        "Calibrated = leave-one-out: each plan predicted with constants fitted on the *other* plans' measurements.",
        "",
        "| figure | a priori | calibrated (leave-one-out) | target |",
        "|---|---|---|---|",
        f"| step time mean abs error | {_pct(s.get('step_time_mean_abs_error'))} | {_pct(s.get('cv_step_time_mean_abs_error'))} | <= 15% (goal 10%) |",
        f"| step time max abs error | {_pct(s.get('step_time_max_abs_error'))} | {_pct(s.get('cv_step_time_max_abs_error'))} | |",
        f"| Spearman rank correlation | {_num(s.get('spearman'))} | {_num(s.get('cv_spearman'))} | >= 0.8 |",
        f"| planner regret (measured top-1 / best measured) | {_num(s.get('regret'))} | {_num(s.get('cv_regret'))} | <= 1.10 (goal 1.05) |",
        f"| peak memory mean abs error (max over ranks) | {_pct(s.get('peak_mean_abs_error'))} | {_pct(s.get('cv_peak_mean_abs_error'))} | |",
        f"| peak live tensor bytes mean abs error (max over ranks) | {_pct(s.get('tensor_peak_mean_abs_error'))} | | |",
        "",
        f"Plans run: {s.get('plans_run')}, failed: {s.get('plans_failed')}. Planner top-1: "
        f"`{s.get('planner_top1_plan')}`; fastest measured: `{s.get('best_measured_plan')}`. "
        f"Host load average (1 min) during the timed steps: {_num(s.get('load_avg_min'), '.1f')} - "
        f"{_num(s.get('load_avg_max'), '.1f')} (the sweep's own {s.get('procs')} processes included).",
        "",
        "Machine drift: right before each plan runs, the reference block of the profile's concurrency "
        "benchmark is timed again (`speed_probe_s`, ~0.5 s); its CPU time over the profile's is the machine's "
        f"speed ratio, {_num(s.get('speed_ratio_min'), '.2f')} - {_num(s.get('speed_ratio_max'), '.2f')} in this "
        "sweep (> 1: slower than when profiled). The a-priori prediction x that ratio: mean |error| "
        f"{_pct(s.get('speed_step_time_mean_abs_error'))} (max {_pct(s.get('speed_step_time_max_abs_error'))}), "
        f"Spearman {_num(s.get('speed_spearman'))}.",
        "",
        "Load-insensitive check: the CPU-work bound of each run, procs x the CPU seconds rank 0 spent per "
        "step / cores (the wall time the measured work needs on otherwise idle cores, bubbles not included): "
        f"prediction vs that bound mean |error| {_pct(s.get('cpu_bound_mean_abs_error'))} (max "
        f"{_pct(s.get('cpu_bound_max_abs_error'))}); measured wall / bound, median "
        f"{_num(s.get('wall_over_cpu_bound_median'), '.2f')}.",
    ]
    runs = runs or s.get("per_repeat")
    if runs and len(runs) > 1:

        def rng(key: str, fmt: Any) -> str:
            vals = [r.get(key) for r in runs if r.get(key) is not None and r.get(key) == r.get(key)]
            return f"{fmt(min(vals))} - {fmt(max(vals))}" if vals else "n/a"

        lines += [
            "",
            f"Machine noise, min - max of the a-priori figures over the {len(runs)} repeated runs of "
            f"every plan: mean error {rng('step_time_mean_abs_error', _pct)}, "
            f"Spearman {rng('spearman', _num)}, regret {rng('regret', _num)}.",
        ]
    lines += [
        "",
        "| plan | measured ms (min-max) | predicted ms | error | CPU-bound ms | calibrated ms | error | measured MiB | predicted MiB | error | calibrated error | tensor MiB | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.sort_values("measured_step_time_s").itertuples():
        lines.append(
            f"| `{r.plan}` | {_num(r.measured_step_time_s * 1e3, '.1f')} ({_num(r.measured_min_s * 1e3, '.0f')}-"
            f"{_num(r.measured_max_s * 1e3, '.0f')}) | {_num(r.predicted_step_time_s * 1e3, '.1f')} | "
            f"{_pct(r.step_time_error)} | {_num(getattr(r, 'measured_cpu_bound_s', float('nan')) * 1e3, '.0f')} | "
            f"{_num(r.cv_predicted_step_time_s * 1e3, '.1f')} | {_pct(r.cv_step_time_error)} | "
            f"{_num(r.measured_peak_bytes / 2**20, '.1f')} | {_num(r.predicted_peak_bytes / 2**20, '.1f')} | {_pct(r.peak_error)} | "
            f"{_pct(getattr(r, 'cv_peak_error', float('nan')))} | "
            f"{_num(getattr(r, 'measured_tensor_peak_bytes', float('nan')) / 2**20, '.1f')} | "
            f"{_pct(getattr(r, 'tensor_peak_error', float('nan')))} |"
        )
    return "\n".join(lines)


def fit_markdown(title: str, fit: Any, *, command: str, constants: dict[str, float]) -> str:
    """A calibration fit: error before/after on the fit and held-out parts, and the fitted constants."""
    lines = [
        f"### {title}",
        "",
        f"Reproduce: `{command}`.",
        "",
        "| part | rows | mean abs error before | after | max abs error after |",
        "|---|---|---|---|---|",
    ]
    for part, before, after in (
        ("fit", fit.before_fit, fit.after_fit),
        ("held-out", fit.before_test, fit.after_test),
    ):
        lines.append(
            f"| {part} | {after.n} | {_pct(before.mean_abs)} | {_pct(after.mean_abs)} | {_pct(after.max_abs)} |"
        )
    lines += [
        "",
        "Fitted constants: " + ", ".join(f"`{k}={v:.4g}`" for k, v in sorted(constants.items())) + ".",
    ]
    return "\n".join(lines)
