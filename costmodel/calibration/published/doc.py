"""Write the validation section of docs/VALIDATION.md (between its published markers), atomically,
keeping every other section of the file as it is: per-set errors, leave-one-source-out error, what is
mechanism and what is fitted, the assumptions of each source, and every row of every set."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...atomic import update_section, write_text_atomic
from .data import ASSUMPTIONS
from .mosaicml import MOSAICML_ASSUMPTIONS
from .table2 import TABLE2_ASSUMPTIONS
from .validate import ValidationResult

__all__ = ["BEGIN", "END", "update_validation_doc", "render_section"]

BEGIN, END = "<!-- published:begin -->", "<!-- published:end -->"

SOURCE_NOTES = {
    "megatron2021": ("Narayanan et al. 2021 (SC21), Tables 1-2 and sec. 5.1", "megatron2021/README.md"),
    "vtrain": ("vTrain (Bang et al., MICRO 2024), Megatron-DeepSpeed on A100", "vtrain/README.md"),
    "mosaicml": ("MosaicML llm-foundry MPT benchmarks, PyTorch FSDP on A100 / H100", "mosaicml/README.md"),
    "h200-executor": ("paraplan's executor on one H200, December 2026", "h200_executor/README.md"),
}

MECHANISM_TEXT = [
    "What is mechanism and what is fitted:",
    "- Mechanism, from the hardware and software as published (data files with their sources): dense peaks, "
    "HBM bandwidth and SM counts (costmodel/data/hardware.yaml); each GPU's measured maximum achievable matmul "
    "FLOP/s (MAMF, bf16 and fp8) and each attention kernel's published share of peak (FlashAttention-1/-2/-3, "
    "cuDNN) scale the GEMM and attention rates; what each stack runs (costmodel/data/stacks/*.yaml): the "
    "memory-bound kernels of a block and their bytes (read off Megatron-LM's fused kernels, torch autocast's "
    "fp32 ops, the executor's own code), weight casts and fp32 gradient accumulation, the AdamW implementation "
    "(fused 28 B or foreach 80 B per parameter), which communication it overlaps (TP with sequence parallelism "
    "under Transformer Engine, DP chunked per layer), and how ZeRO-3 gathers (per micro-batch forward, again "
    "for the backward, again for a recomputed forward under DeepSpeed's hooks; reduce-scatter per micro-batch); "
    "ring collectives on the topology graph with one latency term per block collective; the SM share a NCCL "
    "collective takes from the compute it overlaps (32 channels / SMs); causal flash attention skips half "
    "the score blocks; fp8 runs only the Linear GEMMs in fp8 and pays input / weight / gradient casts; "
    "pipeline stages balanced by their priced time when they do not divide the layers.",
    "- Fitted: the `EfficiencyModel` constants below (GEMM efficiency and its fall-off with thin shapes, "
    "memory efficiency, per-op host time and its overlap exponent, collective efficiency, the per-send "
    "pipeline overhead), tuned in 2026-11 on Narayanan Table 1 and vTrain (in-sample for those two). "
    "`attention_efficiency` (share of a kernel's published peak) was set by hand, not tuned.",
    "- Chosen after seeing data (disclosed, not fitted numerically): the DeepSpeed stack's ZeRO-3 traffic "
    "crossing each GPU's own NIC share and its re-gather for a recomputed forward, and the NCCL SM-contention "
    "term, were added after Table 2's ZeRO-3 rows were found 30-180% too fast; the `composer` stack's "
    "FlashAttention-1 kernel is what llm-foundry's benchmark scripts select by default (found after its long "
    "sequence rows were 20-30% too fast with FlashAttention-2). Their numbers come from the sources cited in "
    "the data files; no constant was adjusted to those rows.",
]


def _fmt(col: str, val: Any) -> str:
    if col in ("error", "mean_signed_error", "step_error"):
        return f"{val:+.1%}"
    if col in ("mean_abs_error", "max_abs_error", "within_10pct", "step_mean_abs_error", "defaults", "fit_all",
               "left_out"):
        return f"{val:.1%}"
    if isinstance(val, float):
        return f"{val:.4g}"
    return str(val)


def _table(rows, columns: list[tuple[str, str]]) -> list[str]:
    out = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows.itertuples():
        out.append("| " + " | ".join(_fmt(col, getattr(r, col)) for col, _ in columns) + " |")
    return out


def _loso_lines(loso: Any) -> list[str]:
    if loso is None:
        return ["Leave-one-source-out error: not computed in this run (`paraplan validate-published --loso`).", ""]
    lines = ["### Leave-one-source-out (step-time mean |error|)", "",
             f"Constants fitted in each fold: {', '.join(loso.names)} (the `EfficiencyModel` fields the defaults "
             "were tuned on); each source weighs equally in the fit. `defaults`: the shipped constants "
             "(in-sample for Narayanan Table 1 and vTrain); `fit on all`: fitted on every source; `left out`: "
             "fitted on the other sources, scored on this one. Stacks and hardware data are not fitted.", ""]
    lines += _table(loso.table, [("source", "source"), ("rows", "rows"), ("defaults", "defaults"),
                                 ("fit_all", "fit on all"), ("left_out", "left out")])
    worst = loso.table.sort_values("left_out", ascending=False).iloc[0]
    lines += ["", f"Reading: the worst left-out source is {worst['source']} ({worst['left_out']:.1%} vs "
              f"{worst['defaults']:.1%} in-sample). Left out, a source loses the constants only it identifies: "
              "vTrain's single-node runs are host-bound (an eager framework issuing each op), and the per-op host "
              "time and its overlap with the GPU are pinned down by vTrain alone (the other sources are GPU-bound, "
              "and every non-Megatron stack states its own host time); fitted without vTrain they drift and its "
              "small-model rows miss. The GPU-bound sources move little between folds: their error comes from the "
              "mechanisms, not from the fitted constants.", "", "Constants per fold:", "", "```"]
    for fold, consts in loso.folds.items():
        lines.append(f"{fold}: " + ", ".join(f"{k}={v:.4g}" for k, v in consts.items()))
    return lines + ["```", ""]


def render_section(result: ValidationResult, *, loso: Any = None) -> str:
    """The markdown between the markers: command, summary, LOSO, constants, assumptions, every row."""
    lines = [BEGIN, "## Published runs (cost model without any GPU profile)", "",
             "Reproduce: `make validate` (= `paraplan validate-published --loso --out docs/VALIDATION.md`; every "
             "row as CSV: `--csv FILE`). Error = predicted / published - 1 (TFLOP/s per GPU for Narayanan's "
             "tables, step time elsewhere); `step-time |error|` is the step-time error of every row. One set of "
             "constants for every row; each row priced with the stack its source ran.", ""]
    if result.summary.empty:
        lines += [f"No published runs were found in {result.data_dir}.", END]
        return "\n".join(lines)
    lines += _table(result.summary, [("set", "set"), ("stack", "stack"), ("rows", "rows"),
                                     ("mean_abs_error", "mean abs error"), ("max_abs_error", "max abs error"),
                                     ("mean_signed_error", "mean signed"), ("within_10pct", "share within 10%"),
                                     ("step_mean_abs_error", "step-time abs error")])
    lines += [""] + _loso_lines(loso) + MECHANISM_TEXT + [""]
    lines += ["Constants (`costmodel.calibration.published.VALIDATION_EFFICIENCY`: the defaults with the gradient "
              "all-reduce after the backward pass, as the 2021 Megatron-LM and vTrain runs did; a stack's file "
              "overrides what it states):", "", "```",
              *(f"{k} = {v}" for k, v in asdict(result.efficiency).items()), "```", ""]
    for origin, (title, readme) in SOURCE_NOTES.items():
        lines.append(f"Source {origin}: {title} (costmodel/calibration/published/sources/{readme}).")
    lines.append("")
    for name, items in (("megatron2021 Table 1", ASSUMPTIONS["megatron2021"]), ("megatron2021 Table 2 / 5.1",
                        TABLE2_ASSUMPTIONS), ("vtrain", ASSUMPTIONS["vtrain"]), ("mosaicml", MOSAICML_ASSUMPTIONS)):
        lines.append(f"Assumptions, {name}:")
        lines += [f"- {a}" for a in items]
        lines.append("")
    if result.skipped:
        lines += ["Rows that cannot be priced:"] + [f"- {s}" for s in result.skipped] + [""]
    cols = [("label", "run"), ("gpus", "GPUs"), ("plan", "plan"), ("published", "published"),
            ("predicted", "predicted"), ("error", "error")]
    rows = result.rows
    for name in result.summary["set"]:
        sub = rows[rows["set"] == name]
        sub = sub.reindex(sub["error"].abs().sort_values(ascending=False).index)
        metric = "TFLOP/s per GPU" if "metric" in sub and sub["metric"].iloc[0] == "tflops_per_gpu" else "step time, s"
        lines += [f"<details><summary>{name}: all {len(sub)} rows ({metric}, largest errors first)</summary>", ""]
        lines += _table(sub, cols) + ["", "</details>", ""]
    lines.append(END)
    return "\n".join(lines)


ROWS_CSV = "validation_published.csv"
"""Every priced row of the published sets, written next to the doc (what the app's confidence reads)."""
ROWS_COLUMNS = ("set", "label", "model", "params", "gpu", "gpus", "stack", "plan", "metric", "published", "predicted",
                "error", "step_error")


def update_validation_doc(path: str | Path, result: ValidationResult, *, loso: Any = None) -> None:
    """Replace (or append) the published section of `path`, keeping the rest of the file, and write every
    row to `ROWS_CSV` beside it."""
    section = render_section(result, loso=loso)
    update_section(path, "published", section[len(BEGIN):-len(END)], title="Validation")
    if not result.rows.empty:
        rows = result.rows[[c for c in ROWS_COLUMNS if c in result.rows]]
        write_text_atomic(Path(path).parent / ROWS_CSV, rows.to_csv(index=False, float_format="%.6g"))
