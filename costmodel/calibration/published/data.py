"""Published training runs as (model, cluster, training, plan, measured) cases.

Sources (shipped in `sources/` beside this module, copied unchanged from their publications; see each
folder's README for provenance and licence):
- `megatron2021/runs.csv`: Narayanan et al. 2021 (SC21), Table 1: GPT 1.7B-1T on Selene (DGX A100
  80 GB, 8 x 200 Gb/s HDR per node), achieved TFLOP/s per GPU counted with eq. 3 (includes the
  recomputed forward), interleaved 1F1B.
- `vtrain/ground_truth_{single,multi}.csv`: vTrain (Bang et al., MICRO 2024), iteration times of
  Megatron-DeepSpeed GPT runs on A100 nodes (8 GPUs, 800 Gb/s per node), full recomputation, 1F1B.

Assumptions where a source is silent (the same for every row, see ASSUMPTIONS)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ...catalog import get_cluster
from ...specs import ClusterSpec, ModelSpec, ParallelPlan, TrainingSpec

__all__ = ["Case", "ASSUMPTIONS", "SOURCES_DIR", "find_data_dir", "megatron_table1_cases", "vtrain_cases"]

SOURCES_DIR = Path(__file__).resolve().parent / "sources"

ASSUMPTIONS = {
    "megatron2021": [
        "cluster dgx-a100 (A100 80 GB, NVSwitch, 8 x HDR 200 Gb/s per node), as the paper states",
        "micro-batch size 1 (not stated for Table 1)",
        "interleaved 1F1B with v = 2 model chunks per rank when layers/pp is even, else 3 when divisible "
        "by 3, else plain 1F1B (v not stated); pp = 1 rows use no pipeline",
        "fp16 mixed precision, full recomputation (eq. 3 assumes it), no sequence parallelism, no "
        "FlashAttention, no ZeRO, data-parallel all-reduce after the backward pass (2021 Megatron-LM)",
        "predicted figure: hardware TFLOP/s per GPU counted with eq. 3 (our hardware FLOPs equal it)",
    ],
    "vtrain": [
        "cluster vtrain-a100: A100 80 GB (3.6B with mb 8 and tp=pp=1 needs > 40 GB), NVSwitch, "
        "4 x HDR 200 Gb/s = 800 Gb/s per node as the vTrain configs state",
        "vocabulary 50257 padded to a multiple of 128*tp (Megatron's make-vocab-size-divisible-by)",
        "fp16 mixed precision, full recomputation, 1F1B, no sequence parallelism, no FlashAttention, "
        "no ZeRO, no gradient bucketing (all-reduce after the backward pass), as the configs state",
    ],
}


@dataclass(frozen=True)
class Case:
    """One published run: what to estimate and the published figure."""

    source: str              # 'megatron2021' or 'vtrain-single' / 'vtrain-multi'
    label: str
    model: ModelSpec
    cluster: ClusterSpec
    training: TrainingSpec
    plan: ParallelPlan
    metric: str              # 'tflops_per_gpu' or 'step_time_s'
    published: float
    origin: str = ""         # the publication (source folder) the row comes from: the unit left out by LOSO


def find_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder of published runs: `data_dir` when given, else the copy shipped with paraplan
    (`costmodel/calibration/published/sources/`: megatron2021/, vtrain/, each with its README)."""
    if data_dir is not None:
        path = Path(data_dir)
        if not path.is_dir():
            raise ValueError(f"--data {str(path)!r} is not a folder; point it at a folder with megatron2021/ "
                             "and vtrain/ (or leave it out for the copy shipped with paraplan)")
        return path
    return SOURCES_DIR


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _gpt(name: str, layers: int, hidden: int, heads: int, vocab: int, seq: int) -> ModelSpec:
    return ModelSpec(name=name, arch="decoder", num_layers=layers, hidden_size=hidden, num_heads=heads,
                     vocab_size=vocab, max_seq_len=seq, activation="gelu", norm="layernorm",
                     position="learned", tie_embeddings=True, bias=True)


def _chunks(layers_per_rank: int) -> int:
    return 2 if layers_per_rank % 2 == 0 else (3 if layers_per_rank % 3 == 0 else 1)


def megatron_table1_cases(data_dir: Path) -> list[Case]:
    """Table 1 rows of megatron2021/runs.csv (achieved TFLOP/s per GPU)."""
    out = []
    for row in _read(data_dir / "megatron2021" / "runs.csv"):
        if row["table"] != "Table 1":
            continue
        layers, hidden, heads = int(row["num_layers"]), int(row["hidden_size"]), int(row["num_heads"])
        tp, pp, dp = int(row["tp"]), int(row["pp"]), int(row["dp"])
        gpus, per_node = int(row["num_gpus"]), int(row["gpus_per_node"])
        seq, batch = int(row["seq_len"]), int(row["global_batch"])
        v = _chunks(layers // pp) if pp > 1 else 1
        schedule = "interleaved-1f1b" if v > 1 else "1f1b"
        plan = ParallelPlan(dp=dp, tp=tp, pp=pp, micro_batch_size=1, virtual_stages=v, schedule=schedule,
                            recompute="full")
        out.append(Case(
            source="megatron2021", label=row["model_name"], origin="megatron2021",
            model=_gpt(row["model_name"], layers, hidden, heads, int(row["vocab_size"]), seq),
            cluster=get_cluster("dgx-a100", nodes=math.ceil(gpus / per_node)),
            training=TrainingSpec(global_batch_size=batch, seq_len=seq, dtype="fp16", flash_attention=False),
            plan=plan, metric="tflops_per_gpu", published=float(row["measured_tflops_per_gpu"])))
    return out


def vtrain_cases(data_dir: Path, *, which: str) -> list[Case]:
    """vTrain rows ('single' or 'multi'): measured iteration time in seconds."""
    out = []
    for i, row in enumerate(_read(data_dir / "vtrain" / f"ground_truth_{which}.csv")):
        tp, dp, pp = int(row["tensor parallelism"]), int(row["data parallelism"]), int(row["pipeline parallelism"])
        layers, hidden, heads = int(row["# layers"]), int(row["hidden size"]), int(row["attention heads"])
        seq, batch, mb = int(row["sequence length"]), int(row["global batch"]), int(row["micro batch"])
        gpus = int(row["# GPUs"])
        vocab = math.ceil(50257 / (128 * tp)) * 128 * tp
        model = _gpt(f"gpt-h{hidden}-l{layers}", layers, hidden, heads, vocab, seq)
        plan = ParallelPlan(dp=dp, tp=tp, pp=pp, micro_batch_size=mb, schedule="1f1b", recompute="full")
        out.append(Case(
            source=f"vtrain-{which}", label=f"{which}#{i}", origin="vtrain",
            model=model, cluster=get_cluster("vtrain-a100", nodes=max(1, math.ceil(gpus / 8))),
            training=TrainingSpec(global_batch_size=batch, seq_len=seq, dtype="fp16", flash_attention=False),
            plan=plan, metric="step_time_s", published=float(row["iteration time (ms)"]) / 1e3))
    return out
