"""How far to trust a predicted number: the cost model's error on the validated runs closest to the
prediction (device, software stack, model size, GPU count), read from the files `make validate` and
`paraplan validate --local` write into docs/ - never a figure made up here.

Validated runs (one `Case` each):
- every priced row of the published sets (`docs/validation_published.csv`, written with
  docs/VALIDATION.md: Narayanan et al. 2021 Tables 1-2, vTrain, MosaicML, the H200 executor runs, ...),
  with its step-time error;
- the closed loop on this machine (`paraplan validate --local`: CPU, paraplan's executor; the model and
  process count its section names; per-plan errors from the CSV it names).

Closeness: the same kind of device (GPU or CPU), runs on the same GPU before others, then |log10(params
ratio)| + 0.5 |log10(GPUs ratio)|; the `k` closest runs give the median and the largest |error|."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ui.format import percent

__all__ = ["Case", "Confidence", "load_cases", "closest", "model_params", "DOCS"]

DOCS = Path(__file__).resolve().parent.parent / "docs"
PUBLISHED_CSV = "validation_published.csv"


@dataclass(frozen=True)
class Case:
    """One validated run: where it ran, on what, and the cost model's relative error there."""

    source: str
    device: str
    stack: str
    model: str
    params: float
    gpus: int
    plan: str
    error: float


@dataclass(frozen=True)
class Confidence:
    """The error of the closest validated runs to one prediction."""

    typical_abs_error: float
    max_abs_error: float
    cases: tuple[Case, ...]
    note: str = ""

    def short(self) -> str:
        """'±8.3% typical' (median |error| of the closest validated runs)."""
        return f"±{percent(self.typical_abs_error)} typical"

    def text(self) -> str:
        """One line: the band, what it is computed from, and what differs from the prediction."""
        devices = sorted({c.device for c in self.cases})
        stacks = sorted({c.stack for c in self.cases})
        sizes = [c.params for c in self.cases]
        gpus = [c.gpus for c in self.cases]
        line = (f"±{percent(self.typical_abs_error)} typical, {percent(self.max_abs_error)} at most: the cost model's "
                f"|error| on the {len(self.cases)} closest validated runs ({', '.join(devices)}; {'; '.join(stacks)}; "
                f"{_span(sizes, _size)} parameters, {_span(gpus, str)} "
                f"{'processes' if devices == ['CPU'] else 'GPUs'}; docs/VALIDATION.md)")
        return line + (f". {self.note}" if self.note else "")


def _span(values: list, fmt) -> str:  # noqa: ANN001
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def _size(params: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if params >= scale:
            return f"{params / scale:.3g}{suffix}"
    return f"{params:.0f}"


def model_params(model: object) -> float:
    """Parameters of a ModelSpec (the cost model's count)."""
    from costmodel.layer.params import total_params

    return float(total_params(model))


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> tuple[Case, ...]:
    doc = Path(path)
    text = doc.read_text()
    cases: list[Case] = []
    published = doc.parent / PUBLISHED_CSV
    if published.is_file():
        df = pd.read_csv(published).dropna(subset=["step_error", "params", "gpus"])
        cases += [Case(str(r.set), str(r.gpu).upper().split("-")[0], str(r.stack), str(r.model), float(r.params),
                       int(r.gpus), str(r.plan), float(r.step_error)) for r in df.itertuples()]
    m = re.search(r"Model `([\w.-]+)`, (\d+) Gloo processes on CPU.*?Per-plan CSV: `([\w.-]+)`", text, re.S)
    if m:
        from costmodel import load_model

        name, procs, csv = m.group(1), int(m.group(2)), doc.parent / m.group(3)
        if csv.is_file():
            params = model_params(load_model(name))
            df = pd.read_csv(csv)
            df = df[df["measured_step_time_s"].notna() & df["step_time_error"].notna()]
            cases += [Case("closed loop", "CPU", "paraplan executor (eager torch, Gloo)", name, params, procs,
                           str(r.plan), float(r.step_time_error)) for r in df.itertuples()]
    return tuple(cases)


def load_cases(docs: Path = DOCS) -> tuple[Case, ...]:
    """Every validated run docs/VALIDATION.md and the CSVs beside it hold; () without the doc."""
    doc = docs / "VALIDATION.md"
    if not doc.is_file():
        return ()
    rows = docs / PUBLISHED_CSV
    return _load(str(doc), doc.stat().st_mtime + (rows.stat().st_mtime if rows.is_file() else 0.0))


def closest(cases: tuple[Case, ...], *, device: str, params: float, gpus: int, k: int = 8) -> Confidence | None:
    """The error of the `k` validated runs closest to a prediction for a `params`-parameter model on
    `gpus` devices of kind `device` ('CPU' or a GPU name such as 'h100-sxm'); None without cases."""
    cpu = device.lower() == "cpu"
    pool = [c for c in cases if (c.device == "CPU") == cpu]
    if not pool:
        return None

    def distance(c: Case) -> tuple[bool, float]:   # the same GPU first, then the nearest size and scale
        other_gpu = not cpu and c.device.lower() not in device.lower()
        return other_gpu, abs(math.log10(c.params / params)) + 0.5 * abs(math.log10(c.gpus / max(gpus, 1)))

    near = tuple(sorted(pool, key=distance)[:k])
    errors = [abs(c.error) for c in near]
    note = ""
    if not cpu and not any(c.device.lower() in device.lower() for c in near):
        note = f"No validated run on {device}; the closest are on {', '.join(sorted({c.device for c in near}))}"
    return Confidence(statistics.median(errors), max(errors), near, note)
