"""The `memory` section of docs/VALIDATION.md: the memory model against measured per-GPU memory
(`costmodel.calibration.published.memory`), written atomically between its markers."""

from __future__ import annotations

from pathlib import Path

from ...atomic import update_section
from ...specs import MEMORY_SAFETY_MARGIN
from .memory import MemoryValidation

__all__ = ["render_memory_section", "update_memory_doc"]

MEMORY_MECHANISM = [
    "What is mechanism and what is fitted: nothing is fitted. Each stack's file (costmodel/data/stacks/*.yaml, "
    "`memory`) states which weight copies it keeps and in which dtype, how it accumulates gradients, which "
    "tensors autograd keeps per block in each precision and recomputation mode (read off the executor's "
    "model, torchtitan 9dec370's model and SAC policy, torch's derivatives.yaml; Korthikanti et al. 2022 "
    "Table 2 for Megatron), its loss's buffers (torch's F.cross_entropy on fp32 logits: 12 B per logit; "
    "Megatron's fused vocabulary-parallel loss: 6 B), the optimizer's temporaries (foreach AdamW: 4 B per "
    "parameter of a group; fused: none), communication buffers and, assumed rather than measured, the caching "
    "allocator's reserve (2% of the allocated peak) and the CUDA context + NCCL buffers (1 GiB + 256 MiB per "
    "communicator; not part of these figures). Chosen after seeing data (disclosed; each number read off the "
    "code it names, none adjusted to a row): the vocabulary-parallel loss's 16 B per logit (torch's "
    "`loss_parallel` backward) was added after Table 4's tensor-parallel rows were found 17-22% low with the "
    "12 B of the plain loss; the reserved-but-unallocated hole the freed 16-bit logits leave (2 B per logit) "
    "was worked out while Table 1's rows were under study. Before this memory model (commit c150ee1: ZeRO "
    "states, Korthikanti's activations, 4 B fp32 logits, a flat 1 GiB) the same 12 torchtitan rows were "
    "36% off on average (max 47%): the 8B FSDP2 rows 17-34% over, the long-sequence and tensor-parallel "
    "rows 41-47% under (their loss buffers).",
    "The executor's CPU runs (live tensor bytes against stack `paraplan`'s fp32 tables, `paraplan validate "
    "--local`) are in the closed-loop section; the GPU benchmark (`make bench-gpu`, section `gpu`) records "
    "predicted vs max_memory_allocated / max_memory_reserved on a GPU.",
    f"The planner's fit check keeps {MEMORY_SAFETY_MARGIN:.0%} of each GPU's memory free "
    "(`costmodel.MEMORY_SAFETY_MARGIN`, `--memory-margin`): a plan fits when its peak (reserved + context) is "
    "at most the rest.",
]


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def render_memory_section(result: MemoryValidation) -> str:
    """Markdown: command, per-set summary, mechanism note, every row."""
    lines = ["## Memory: predicted vs measured per-GPU memory", "",
             "Reproduce: `paraplan validate-published --out docs/VALIDATION.md` (this section with the published "
             "step times; `costmodel/calibration/published/memory.py`). Error = predicted / measured - 1 of the "
             "figure the source reports: `reserved` = torch.cuda.max_memory_reserved (torchtitan logs it), "
             "`allocated` = max_memory_allocated (the executor's summary).", "",
             "| set | figure | rows | mean abs error | max abs error | mean signed | target |",
             "|---|---|---|---|---|---|---|"]
    targets = {"torchtitan": "mean <= 10%, none over 20%", "h200-executor": "within 5%, never under by > 3%"}
    for r in result.summary.itertuples():
        lines.append(f"| {r.set} | {r.metric} | {r.rows} | {r.mean_abs_error:.1%} | {r.max_abs_error:.1%} | "
                     f"{r.mean_signed_error:+.1%} | {targets.get(r.set, '')} |")
    lines += ["", *MEMORY_MECHANISM, "",
              "Sources: torchtitan's `benchmarks/llama3_h100_202412_torchtitan.md` "
              "(costmodel/calibration/published/sources/torchtitan_memory/README.md: what each column means, "
              "how each row is priced); paraplan's executor on one H200 "
              "(sources/h200_executor/README.md). The H200 rows were measured when the executor ran foreach "
              "AdamW on CUDA; each is priced with that optimizer (its sqrt(v) temporary over a whole parameter "
              "group is the 7B run's peak, at the optimizer step) and, as a check of the executor now (fused "
              "AdamW, as a plain fused loop measured), with the shipped stack against the plain loop's peak.", ""]
    if result.skipped:
        lines += ["Rows not priced:"] + [f"- {s}" for s in result.skipped] + [""]
    lines += ["| set | run | plan | measured GiB | predicted GiB | error | peak moment (shipped stack) |",
              "|---|---|---|---|---|---|---|"]
    for r in result.rows.itertuples():
        lines.append(f"| {r.set} | {r.label} | `{r.plan}` | {r.measured_gib:.2f} | {r.predicted_gib:.2f} | "
                     f"{_pct(r.error)} | {r.moment} |")
    h200 = result.rows[result.rows["set"] == "h200-executor"]
    if not h200.empty:
        lines += ["", "The executor now (fused AdamW on CUDA) vs a plain torch loop with fused AdamW (same model, "
                  "micro-batching, autocast), both measured in the same session:", "",
                  "| run | plain loop allocated GiB | predicted allocated GiB (stack paraplan as shipped) | error |",
                  "|---|---|---|---|"]
        for r in h200.itertuples():
            lines.append(f"| {r.label} | {r.plain_loop_gib:.2f} | {r.allocated_gib:.2f} | "
                         f"{_pct(r.allocated_gib / r.plain_loop_gib - 1)} |")
        gaps = ", ".join(f"{r.plain_loop_gib - r.measured_gib:.2f} vs {r.bf16_logits_gib:.2f}"
                         for r in h200.itertuples() if r.moment.startswith("stage 0, forward")
                         and r.plain_loop_gib > r.measured_gib)
        lines += ["", "The plain loop keeps its bf16 logits referenced through the backward (a local variable); the "
                  "executor frees them before. Where both peak at the loss (the first two runs), plain - executor "
                  f"measured vs the bf16 logits' size: {gaps} GiB."]
    return "\n".join(lines) + "\n"


def update_memory_doc(path: str | Path, result: MemoryValidation) -> None:
    """Replace (or append) the `memory` section of `path`."""
    update_section(path, "memory", render_memory_section(result), title="Validation")
