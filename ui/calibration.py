"""The Calibrate page's views: a calibration profile and the validation report (predicted vs measured)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ui import services
from ui.jobs import paraplan_argv
from ui.widgets import show_chart

__all__ = ["profile_argv", "find_profile", "show_profile", "ValidationReport", "find_validation",
           "show_validation", "validation_errors"]

_REPO = Path(__file__).resolve().parent.parent


def profile_argv(out_dir: Path, *, quick: bool = False) -> list[str]:
    """`paraplan profile --out OUT/profile.json`; `quick` skips collectives and repeats once."""
    argv = paraplan_argv("profile", "--out", str(out_dir / "profile.json"), "--no-progress")
    options = services.cli_options("profile")
    if quick and "--nprocs" in options:
        argv += ["--nprocs", "0", "--repeats", "1"]
    return argv


def find_profile(out_dir: Path) -> dict[str, Any] | None:
    """The profile JSON the profiler wrote under `out_dir`."""
    for path in sorted(out_dir.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            return data
    return None


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """A measured curve in readable units: FLOP/s as GFLOP/s, bytes as MiB, bytes/s as GB/s, seconds
    as microseconds (the raw columns are replaced)."""
    out = df.copy()
    for col in list(out.columns):
        if not pd.api.types.is_numeric_dtype(out[col]):
            continue
        if col.endswith("flops_per_s"):
            out[col.replace("flops_per_s", "gflop_per_s")] = out.pop(col) / 1e9
        elif col.endswith("bytes_per_s"):
            out[col.replace("bytes_per_s", "gb_per_s")] = out.pop(col) / 1e9
        elif col.endswith("bytes") or col == "nbytes":
            out[col.replace("nbytes", "mib").replace("bytes", "mib")] = out.pop(col) / 2**20
        elif col.endswith("_s"):
            out[col[:-2] + "_us"] = out.pop(col) * 1e6
    return out


_UNIT_FORMATS = {"gflop_per_s": "%.1f GFLOP/s", "gb_per_s": "%.2f GB/s", "mib": "%.2f MiB", "_us": "%.1f us"}


def show_profile(profile: dict[str, Any]) -> None:
    """Headline fields, then every measured curve (lists of records) as a table and a line chart, in
    readable units."""
    scalars = {k: v for k, v in profile.items() if isinstance(v, str | int | float | bool)}
    if scalars:
        st.dataframe(pd.DataFrame([scalars]), hide_index=True, key="profile_fields")
    for name, value in profile.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            df = readable(pd.DataFrame(value))
            st.markdown(f"**{name}**")
            numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
            if len(numeric) >= 2:
                show_chart(alt.Chart(df).mark_line(point=True).encode(
                    x=alt.X(f"{numeric[0]}:Q", scale=alt.Scale(type="log")), y=f"{numeric[-1]}:Q",
                    tooltip=list(df.columns)).properties(height=200))
            config = {c: st.column_config.NumberColumn(c, format=fmt) for c in df.columns
                      for suffix, fmt in _UNIT_FORMATS.items() if c.endswith(suffix)}
            st.dataframe(df, hide_index=True, key=f"profile_{name}", column_config=config)
    with st.expander("Profile JSON"):
        st.json(profile)


@dataclass(frozen=True)
class ValidationReport:
    csv: Path | None
    markdown: Path | None
    others: tuple[Path, ...] = ()
    """Older closed-loop CSVs kept in docs/ (earlier rounds), for comparison."""


def find_validation(root: Path = _REPO) -> ValidationReport:
    """docs/VALIDATION.md and the closed-loop CSV its current local section names ('Per-plan CSV:
    `validation_local.csv`'); the other validation CSVs in docs/ are earlier rounds. File times say
    nothing in a checkout, so the document decides which one is current."""
    docs = root / "docs"
    md = docs / "VALIDATION.md"
    csvs = sorted(docs.glob("*validation*.csv")) if docs.is_dir() else []
    current = None
    if md.is_file():
        m = re.search(r"<!-- closedloop:local -->.*?Per-plan CSV: `([^`]+)`", md.read_text(), re.S)
        if m and (docs / m.group(1)).is_file():
            current = docs / m.group(1)
    if current is None and (docs / "validation_local.csv").is_file():
        current = docs / "validation_local.csv"
    return ValidationReport(csv=current, markdown=md if md.is_file() else None,
                            others=tuple(p for p in csvs if p != current))


def validation_errors(df: pd.DataFrame) -> pd.DataFrame:
    """Adds `step_time_error` (predicted / measured - 1) when both step-time columns are present."""
    out = df.copy()
    if {"measured_step_time_s", "predicted_step_time_s"} <= set(out.columns):
        out["step_time_error"] = out["predicted_step_time_s"] / out["measured_step_time_s"] - 1.0
    return out


def show_validation(df: pd.DataFrame, *, headline: bool = True) -> None:
    """Predicted vs measured step time per plan (scatter with the y = x line), errors (the headline
    figures unless `headline` is False, for earlier rounds), the table."""
    df = validation_errors(df)
    if "step_time_error" in df and not headline:
        err = df["step_time_error"].abs()
        st.caption(f"That round: {len(df)} plans, mean |error| {err.mean():.1%}, max {err.max():.1%}.")
    elif "step_time_error" in df:
        err = df["step_time_error"].abs()
        c = st.columns(3)
        c[0].metric("Plans", len(df))
        c[1].metric("Mean |error| (step time)", f"{err.mean():.1%}")
        c[2].metric("Max |error|", f"{err.max():.1%}")
        top = float(max(df["measured_step_time_s"].max(), df["predicted_step_time_s"].max()))
        line = alt.Chart(pd.DataFrame({"x": [0.0, top], "y": [0.0, top]})).mark_line(
            color="grey", strokeDash=[4, 4]).encode(x="x:Q", y="y:Q")
        points = alt.Chart(df).mark_circle(size=80).encode(
            x=alt.X("measured_step_time_s:Q", title="measured step time (s)"),
            y=alt.Y("predicted_step_time_s:Q", title="predicted step time (s)"),
            tooltip=[c for c in df.columns if c in ("plan", "measured_step_time_s", "predicted_step_time_s",
                                                    "step_time_error")])
        show_chart((line + points).properties(height=300, title="Predicted vs measured step time"))
    shown = df.copy()
    for col in [c for c in shown.columns if c.endswith("_error")]:
        shown[col] = shown[col] * 100.0
    for col in [c for c in shown.columns if c.endswith("_bytes")]:
        shown[col.replace("_bytes", "_mib")] = shown.pop(col) / 2**20
    def label(col: str, suffix: str, unit: str) -> str:
        return f"{col.removesuffix(suffix).replace('_', ' ')} {unit}"

    config = {c: st.column_config.NumberColumn(label(c, "_error", "error (%)"), format="%+.1f%%")
              for c in shown.columns if c.endswith("_error")}
    config.update({c: st.column_config.NumberColumn(label(c, "_s", "(s)"), format="%.4f s")
                   for c in shown.columns if c.endswith("_step_time_s")})
    config.update({c: st.column_config.NumberColumn(label(c, "_mib", "(MiB)"), format="%.1f MiB")
                   for c in shown.columns if c.endswith("_mib")})
    st.dataframe(shown, hide_index=True, width="stretch", column_config=config)
