"""Validation of a run on the held-out split of its corpus (`executor.data.split_corpus`).

Every `eval_every` steps and at the end, `evaluate` scores `eval_batches` fixed validation batches
(`BatchSource.validation_batch`: the same windows at every evaluation, never trained on) with the
engine's forward-only path (`Engine.eval_loss`: the pipeline schedule's `eval` under PP; TP, FSDP and
DDP as in training), so every plan reports the single process's numbers: the mean token loss over the
batches' target tokens and the perplexity exp(loss) (Jelinek et al. 1977). For masked-LM encoders the
targets are the masked bytes; for T5 the span-corruption targets.

Seq2seq models (T5) also decode greedily (`greedy_decode`: the decoder input grows by the argmax token
one position at a time; each position is one full forward of the plan, so it runs under every plan
without a KV cache) and score the outputs against the targets with sacrebleu's corpus BLEU (Papineni
et al. 2002; Post 2018) and rouge-score's ROUGE-1/2/L F1 (Lin 2004), on a 0-100 scale, as text
(`span_corruption.to_text`: the recovered bytes, spans separated by spaces; the sentinels themselves
are left out, since predicting them in order is trivial and would inflate both scores).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

from .data import BatchSource
from .mesh import axis_group
from .span_corruption import PAD_ID, target_length, to_text

__all__ = ["DEFAULT_EVAL_EVERY", "DEFAULT_EVAL_BATCHES", "check_eval_args", "is_eval_step", "evaluate",
           "greedy_decode", "text_scores", "as_record"]

DEFAULT_EVAL_EVERY = 10
DEFAULT_EVAL_BATCHES = 2


def check_eval_args(eval_every: int, eval_batches: int) -> None:
    """ValueError naming the field for a non-positive evaluation interval or batch count."""
    if eval_every <= 0:
        raise ValueError(f"eval_every: evaluate every N > 0 steps, got {eval_every}; every run reports "
                         "validation loss (use --eval-every N, N >= 1)")
    if eval_batches <= 0:
        raise ValueError(f"eval_batches: evaluate on N > 0 validation batches, got {eval_batches}; use "
                         "--eval-batches N, N >= 1")


def is_eval_step(step: int, *, eval_every: int, last_step: int) -> bool:
    """Evaluate after every `eval_every`-th step and after the last."""
    return step % eval_every == 0 or step == last_step


def evaluate(engine: Any, source: BatchSource, *, num_batches: int, generate: bool = False) -> dict[str, float]:
    """Validation loss, perplexity and target tokens over `num_batches` validation batches (the same on
    every rank); with `generate` (seq2seq) also BLEU and ROUGE of greedy outputs."""
    loss_sum, tokens = 0.0, 0
    for index in range(num_batches):
        batch_loss, batch_tokens = engine.eval_loss(*source.validation_batch(index))
        loss_sum += batch_loss
        tokens += batch_tokens
    loss = loss_sum / max(tokens, 1)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": tokens}
    if generate:
        hyps, refs = [], []
        for index in range(num_batches):
            enc_dec, targets = source.validation_batch(index)
            pred = _gather_rows(engine, greedy_decode(engine, enc_dec, targets))
            vocab = engine.spec.vocab_size
            hyps += [to_text(row, vocab_size=vocab, sentinels=False) for row in pred]
            refs += [to_text(row, vocab_size=vocab, sentinels=False) for row in _gather_rows(engine, targets)]
        out.update(text_scores(hyps, refs))
    return out


@torch.no_grad()
def greedy_decode(engine: Any, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Greedy outputs [rows, t] of an encoder-decoder for this rank's rows (t = the span-corruption
    target length): position j is the argmax given the encoder input and outputs 0..j-1."""
    seq_len = targets.shape[1]
    steps = target_length(seq_len)
    encoder, decoder = tokens[:, :seq_len], torch.full_like(tokens[:, seq_len:], PAD_ID)
    out = torch.empty(targets.shape[0], steps, dtype=torch.int64)
    for j in range(steps):
        pred = engine.predict(torch.cat([encoder, decoder], dim=1), targets).cpu()
        out[:, j] = pred[:, j]
        if j + 1 < seq_len:
            decoder[:, j + 1] = pred[:, j]
    return out


def _gather_rows(engine: Any, rows: torch.Tensor) -> torch.Tensor:
    """This DP rank's rows stacked with the other DP ranks' (global batch order), on every rank."""
    group = axis_group(engine.mesh, "dp")
    if group is None or dist.get_world_size(group) == 1:
        return rows
    local = rows.to(engine.device)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local, group=group)
    return torch.cat(parts).cpu()


def text_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, 13a tokenization) and mean ROUGE-1/2/L F1 (rouge-score) x 100."""
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score(ref, hyp) for hyp, ref in zip(hypotheses, references, strict=True)]
    mean = {key: 100.0 * sum(s[key].fmeasure for s in scores) / max(len(scores), 1)
            for key in ("rouge1", "rouge2", "rougeL")}
    return {"bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score), "rouge1": mean["rouge1"],
            "rouge2": mean["rouge2"], "rouge_l": mean["rougeL"]}


def as_record(result: dict[str, float]) -> dict[str, float]:
    """The evaluation as metrics.jsonl fields: val_loss, val_perplexity, val_tokens (val_bleu, ...)."""
    return {f"val_{key}": value for key, value in result.items()}
