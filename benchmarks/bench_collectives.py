"""Accuracy of the calibrated communication model on this machine (Gloo, local processes).

1. Profile: time all-reduce, reduce-scatter, all-gather and all-to-all over 2 and 4 Gloo processes
   at 1 KiB..64 MiB in powers of 4 (what `paraplan profile --nprocs 2,4` measures).
2. Validate: an independent run at every power of 2 from 1 KiB to 64 MiB (half the sizes were never
   profiled), more repeats.
3. Predict each validation point with `build_comm_model(cpu cluster, dp=n, calibration=profile)`
   ('curves': the measured curve, interpolated), with the alpha-beta link fitted to the 2-process
   all-reduces only ('fit n=2': the topology model extrapolating to 4 processes), and with the
   uncalibrated catalog link ('catalog').

Writes the tables into docs/VALIDATION.md (between the collectives markers) and the points to
docs/collectives_accuracy.csv.   Run: `python -m benchmarks collectives` (about 3-6 minutes)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from costmodel import ParallelPlan, get_cluster
from costmodel.calibration import CalibrationProfile
from costmodel.comm import build_comm_model
from costmodel.profile.dist_bench import run_collectives

__all__ = ["main", "measure", "accuracy_table", "write_section"]

BEGIN, END = "<!-- collectives:begin -->", "<!-- collectives:end -->"
OPS = ["all_reduce", "reduce_scatter", "all_gather", "all_to_all"]
GROUPS = [2, 4]
ROOT = Path(__file__).resolve().parent.parent


def measure(sizes: list[int], *, repeats: int, seed: int) -> CalibrationProfile:
    """Collective points for every op and group size, as a (collectives-only) profile."""
    points = []
    for n in GROUPS:
        points += run_collectives(nprocs=n, ops=OPS, sizes=sizes, repeats=repeats, seed=seed, timeout_s=900)
    return CalibrationProfile(device="cpu", gpu="cpu", torch_version="", backend="gloo", collectives=tuple(points))


def predictions(profile: CalibrationProfile, validation: CalibrationProfile) -> pd.DataFrame:
    cpu = get_cluster("cpu")
    fit2 = CalibrationProfile(device="cpu", gpu="cpu", torch_version="", collectives=tuple(
        p for p in profile.collectives if p.group_size == 2 and p.op == "all_reduce"))
    grid = {(p.op, p.group_size, p.nbytes) for p in profile.collectives}
    rows = []
    for p in validation.collectives:
        plan = ParallelPlan(dp=p.group_size)
        row = {"op": p.op, "n": p.group_size, "nbytes": p.nbytes, "measured_s": p.time_s,
               "profiled_size": (p.op, p.group_size, p.nbytes) in grid}
        for name, calib in (("curves", profile), ("fit_n2", fit2), ("catalog", None)):
            row[f"{name}_s"] = float(build_comm_model(cpu, plan, calibration=calib).time_s("dp", p.op, p.nbytes))
        rows.append(row)
    df = pd.DataFrame(rows)
    for name in ("curves", "fit_n2", "catalog"):
        df[f"{name}_err"] = (df[f"{name}_s"] / df["measured_s"] - 1).abs()
    return df


def accuracy_table(df: pd.DataFrame) -> str:
    """Markdown: mean |error| per op and group size, split at 1 MiB."""
    lines = ["| op | n | sizes | curves (interpolated) | fit from n=2 all-reduce | catalog link |",
             "|---|---|---|---|---|---|"]
    for (op, n), g in df.groupby(["op", "n"], sort=False):
        for label, part in (("< 1 MiB", g[g.nbytes < 2**20]), (">= 1 MiB", g[g.nbytes >= 2**20])):
            if part.empty:
                continue
            fit = f"{part.fit_n2_err.mean():.0%}" if op == "all_reduce" else "-"
            lines.append(f"| {op} | {n} | {label} ({len(part)}) | {part.curves_err.mean():.0%} | {fit} | "
                         f"{part.catalog_err.mean():.0%} |")
    big = df[df.nbytes >= 2**20]
    unseen = big[~big.profiled_size]
    lines += ["", f"Overall mean |error| for >= 1 MiB: curves {big.curves_err.mean():.1%} "
                  f"(sizes never profiled: {unseen.curves_err.mean():.1%}); all-reduce fit from n=2: "
                  f"{big[big.op == 'all_reduce'].fit_n2_err.mean():.1%} "
                  f"(n=4 only: {big[(big.op == 'all_reduce') & (big.n == 4)].fit_n2_err.mean():.1%})."]
    return "\n".join(lines)


def write_section(body: str, path: Path = ROOT / "docs" / "VALIDATION.md") -> None:
    """Replace (or append) the collectives section of `path` atomically, keeping other sections."""
    text = path.read_text() if path.exists() else "# Validation\n"
    section = f"{BEGIN}\n{body.strip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main() -> None:
    profile_sizes = [1024 * 4**i for i in range(9)]
    validation_sizes = [1024 * 2**i for i in range(17)]
    profile = measure(profile_sizes, repeats=5, seed=0)
    validation = measure(validation_sizes, repeats=7, seed=1)
    df = predictions(profile, validation)
    table = accuracy_table(df)
    print(table)
    csv = ROOT / "docs" / "collectives_accuracy.csv"
    fd, tmp = tempfile.mkstemp(dir=csv.parent, prefix=".collectives.", suffix=".tmp")
    os.close(fd)
    df.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    fit = CalibrationProfile(device="cpu", gpu="cpu", torch_version="", collectives=tuple(
        p for p in profile.collectives if p.group_size == 2 and p.op == "all_reduce")).fit_alpha_beta()
    fit_txt = f"{fit[0] / 1e9:.2f} GB/s, alpha {fit[1] * 1e6:.0f} us" if fit else "no fit"
    body = f"""## Collectives: calibrated communication model vs measured (Gloo, local processes)

Reproduce: `python -m benchmarks collectives` (writes this section and docs/collectives_accuracy.csv).
Host: {os.cpu_count()} CPU cores shared with other jobs; torch.distributed Gloo over 127.0.0.1; fp32 buffers;
each point is the median of 7 timings of the slowest rank. The profile (1 KiB..64 MiB in powers of 4,
5 repeats) and the validation run (every power of 2, an independent run with another seed) are separate
measurements, so the 'curves' column includes run-to-run noise; half the validation sizes were never
profiled. 'fit from n=2' prices 4 processes with the ring model on the link fitted to the 2-process
all-reduces ({fit_txt}); 'catalog' uses the uncalibrated `cpu` preset link. Errors are mean |pred/meas - 1|.

{table}

No GPU was lent to this task, so there is no NCCL/H200 profile yet (`paraplan profile --device cuda
--nprocs N` on a multi-GPU host produces one).
"""
    write_section(body)
    print(f"wrote docs/VALIDATION.md ({BEGIN}) and {csv.relative_to(ROOT)}; "
          f"mean |err| >= 1 MiB (curves) = {np.mean(df[df.nbytes >= 2**20].curves_err):.1%}")


if __name__ == "__main__":
    main()
