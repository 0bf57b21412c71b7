"""T5's span-corruption objective (Raffel et al. 2020, sec. 3.1.4) on byte-level text.

15% of a window's tokens are noise, in spans of mean length 3: the window is cut into alternating
non-noise and noise spans (non-noise first), their lengths a random segmentation as in T5's
`random_spans_noise_mask`. The encoder input keeps the non-noise tokens and puts one sentinel where
each noise span was; the target lists each sentinel followed by the span it hides; both end with EOS.
The raw window is as long as T5's `random_spans_helper` allows, so the encoder input fills `seq_len`.

Token ids: bytes 0-255, PAD_ID (256: starts the decoder, pads), EOS_ID (257), and sentinels counting
down from vocab_size - 1 (T5's `<extra_id_0>` is the last id), so vocab_size - 258 sentinels.

Batch layout for `executor.t5.T5`: tokens [b, 2s] = encoder input | decoder input (the target shifted
right behind PAD_ID, PAD_ID after it), targets [b, s] = target then IGNORE_INDEX (the cost model prices
the decoder at seq_len too; the padded positions carry no loss).
"""

from __future__ import annotations

import torch

__all__ = ["PAD_ID", "EOS_ID", "FIRST_SPECIAL_ID", "NOISE_DENSITY", "MEAN_SPAN_LENGTH", "span_counts",
           "raw_length", "target_length", "check_vocab", "noise_mask", "span_corrupt", "to_text"]

PAD_ID = 256
EOS_ID = 257
FIRST_SPECIAL_ID = 256
"""Ids from here on are not bytes: PAD_ID, EOS_ID, then (from the top of the vocabulary) sentinels."""
NOISE_DENSITY = 0.15
MEAN_SPAN_LENGTH = 3.0
IGNORE_INDEX = -100
"""Target of positions without a loss (as `executor.model.IGNORE_INDEX`, `F.cross_entropy`'s default)."""


def span_counts(raw_len: int) -> tuple[int, int]:
    """(noise tokens, noise spans) of a window of `raw_len` tokens (T5: round(L * 0.15) noise tokens,
    at least 1 and at most L - 1; round(noise / 3) spans, at least 1)."""
    noise = min(max(int(round(raw_len * NOISE_DENSITY)), 1), raw_len - 1)
    return noise, max(int(round(noise / MEAN_SPAN_LENGTH)), 1)


def _lengths(raw_len: int) -> tuple[int, int]:
    """(encoder input, target) lengths of a corrupted window, EOS included."""
    noise, spans = span_counts(raw_len)
    return raw_len - noise + spans + 1, noise + spans + 1


def raw_length(seq_len: int) -> int:
    """The longest window whose corrupted input (with EOS) fits `seq_len` (T5's random_spans_helper)."""
    if seq_len < 4:
        raise ValueError(f"seq_len={seq_len}: span corruption needs at least 4 encoder positions")
    raw = 2
    while _lengths(raw + 1)[0] <= seq_len:
        raw += 1
    return raw


def target_length(seq_len: int) -> int:
    """Decoder positions that carry a target (sentinels, noise tokens, EOS) for encoder length seq_len."""
    return _lengths(raw_length(seq_len))[1]


def check_vocab(vocab_size: int, seq_len: int) -> None:
    """ValueError unless `vocab_size` holds the bytes, PAD, EOS and a sentinel per noise span."""
    spans = span_counts(raw_length(seq_len))[1]
    if vocab_size - (FIRST_SPECIAL_ID + 2) < spans:
        raise ValueError(f"vocab_size: span corruption of seq_len={seq_len} needs {spans} sentinel ids above "
                         f"the 256 bytes, PAD and EOS (vocab_size >= {FIRST_SPECIAL_ID + 2 + spans}); the model "
                         f"has {vocab_size}; use a larger vocabulary or a shorter --seq-len")


def _segment_lengths(rows: int, items: int, segments: int, gen: torch.Generator) -> torch.Tensor:
    """Random partition of `items` into `segments` non-empty runs per row: [rows, segments] lengths."""
    first = torch.zeros(rows, items, dtype=torch.long)
    if segments > 1:
        cuts = torch.rand(rows, items - 1, generator=gen).argsort(dim=1)[:, :segments - 1] + 1
        first.scatter_(1, cuts, 1)
    segment_id = first.cumsum(dim=1)
    return torch.zeros(rows, segments, dtype=torch.long).scatter_add_(1, segment_id, torch.ones_like(segment_id))


def noise_mask(rows: int, raw_len: int, gen: torch.Generator) -> torch.Tensor:
    """[rows, raw_len] bool: True on noise tokens; spans alternate non-noise, noise (T5's
    random_spans_noise_mask), every row with the same counts."""
    noise, spans = span_counts(raw_len)
    lengths = torch.stack([_segment_lengths(rows, raw_len - noise, spans, gen),
                           _segment_lengths(rows, noise, spans, gen)], dim=2).flatten(1)
    starts = lengths.cumsum(dim=1)[:, :-1]
    indicator = torch.zeros(rows, raw_len, dtype=torch.long).scatter_(1, starts, 1)
    return indicator.cumsum(dim=1) % 2 == 1


def _replace_spans(windows: torch.Tensor, drop: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Each run of `drop` positions becomes one sentinel (vocab_size-1, -2, ... in order); EOS appended."""
    first = drop & ~torch.nn.functional.pad(drop[:, :-1], (1, 0))
    sentinel = vocab_size - first.long().cumsum(dim=1)
    values = torch.where(first, sentinel, windows)
    keep = ~drop | first
    out = values[keep].view(windows.shape[0], -1)
    return torch.cat([out, torch.full((windows.shape[0], 1), EOS_ID, dtype=out.dtype)], dim=1)


def span_corrupt(windows: torch.Tensor, *, seq_len: int, vocab_size: int, gen: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw windows [b, raw_length(seq_len)] -> (tokens [b, 2*seq_len], targets [b, seq_len])."""
    check_vocab(vocab_size, seq_len)
    rows, raw_len = windows.shape
    mask = noise_mask(rows, raw_len, gen)
    enc = _replace_spans(windows, mask, vocab_size)
    target = _replace_spans(windows, ~mask, vocab_size)
    if enc.shape[1] > seq_len:
        raise ValueError(f"seq_len: windows of {raw_len} tokens corrupt to {enc.shape[1]} > {seq_len}")
    pad = torch.full((rows, seq_len), PAD_ID, dtype=torch.long)
    enc = torch.cat([enc, pad[:, :seq_len - enc.shape[1]]], dim=1)
    t = target.shape[1]
    dec = pad.clone()
    dec[:, 1:t] = target[:, :-1]
    targets = torch.full((rows, seq_len), IGNORE_INDEX, dtype=torch.long)
    targets[:, :t] = target
    return torch.cat([enc, dec], dim=1), targets


def to_text(ids: list[int] | torch.Tensor, *, vocab_size: int, sentinels: bool = True) -> str:
    """A target or a prediction as text, up to its EOS: bytes as UTF-8, PAD dropped, sentinel k as
    `<extra_id_k>` (T5's name) between spaces, or with `sentinels=False` as a plain space between the
    spans (what BLEU and ROUGE compare: the recovered text, not the trivially predicted sentinels)."""
    out: list[str] = []
    raw = bytearray()
    for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
        if i == EOS_ID:
            break
        if i < FIRST_SPECIAL_ID:
            raw.append(i)
            continue
        out.append(raw.decode("utf-8", errors="replace"))
        raw = bytearray()
        if i > EOS_ID:
            out.append(f" <extra_id_{vocab_size - 1 - i}> " if sentinels else " ")
    out.append(raw.decode("utf-8", errors="replace"))
    return " ".join("".join(out).split())
