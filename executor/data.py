"""Training data: a generated corpus, a byte-level tokenizer (vocab 256) and deterministic batches.

Nothing is downloaded. The default corpus is English-like text generated from a small self-written
grammar with a fixed seed (about 300 KB), so every machine sees the same bytes; `--corpus FILE` trains on
any text file instead. Batch `step` of a run is a pure function of (seed, step): every plan and every
resume sees the same global batch, and data-parallel rank r takes rows [r*B/dp, (r+1)*B/dp).

Decoders train on next-byte prediction. Encoders (BERT) train on masked-LM (Devlin et al. 2019, §3.1):
15% of positions are chosen; of those 80% become MASK_ID, 10% a random byte, 10% stay; targets are the
original bytes there and IGNORE_INDEX (-100) elsewhere. Encoder-decoders (T5) train on span corruption
(`executor.span_corruption`).

Every run holds out the last VAL_FRACTION of the corpus (`split_corpus`): training windows lie in the
first part, validation windows (`executor.evaluate`) in the last, so they never share a byte.
"""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path

import torch

from .span_corruption import raw_length, span_corrupt

__all__ = [
    "VOCAB_SIZE", "MASK_ID", "IGNORE_INDEX", "MLM_PROB", "encode", "decode", "generate_corpus",
    "load_corpus", "global_batch", "rank_rows", "BatchSource", "VAL_FRACTION", "split_corpus", "window_length",
]

VOCAB_SIZE = 256
MASK_ID = 0  # the NUL byte never occurs in the text corpora we use
IGNORE_INDEX = -100
MLM_PROB = 0.15
VAL_FRACTION = 0.05
"""Share of the corpus (its end) held out for validation."""

_SUBJECTS = ["the miller", "a young fox", "the old sailor", "my neighbour", "the river", "a quiet child",
             "the baker", "every farmer", "the north wind", "a grey heron", "the teacher", "our captain",
             "the clockmaker", "a tired horse", "the lighthouse keeper", "the small cat"]
_VERBS = ["carries", "finds", "watches", "paints", "builds", "counts", "remembers", "follows", "mends",
          "sells", "loses", "hears", "gathers", "measures", "opens", "forgets"]
_OBJECTS = ["seven stones", "a wooden boat", "the morning bread", "three red apples", "the broken gate",
            "a letter from the city", "the evening stars", "twelve silver coins", "the long road",
            "an empty basket", "the winter coats", "a map of the hills", "the garden wall", "two lanterns"]
_PLACES = ["by the mill", "near the harbour", "in the market", "under the bridge", "at the edge of the wood",
           "on the hill", "behind the church", "along the shore", "in the valley", "at the crossroads"]
_TIMES = ["at dawn", "before supper", "in the spring", "every tuesday", "after the rain", "at noon",
          "late at night", "in the first week of june", "when the bells ring", "once a year"]
_LINKS = ["and then", "but", "because", "so", "while", "although", "until"]
_NAMES = ["Ada", "Bram", "Clara", "Daan", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kiri", "Luca"]


def _sentence(rng: random.Random) -> str:
    def clause() -> str:
        parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        if rng.random() < 0.6:
            parts.append(rng.choice(_PLACES))
        if rng.random() < 0.4:
            parts.append(rng.choice(_TIMES))
        return " ".join(parts)

    kind = rng.random()
    if kind < 0.15:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        text = f"{rng.choice(_NAMES)} adds {a} and {b} and gets {a + b}"
    elif kind < 0.25:
        text = f"{rng.choice(_NAMES)} asks whether {clause()}"
    elif kind < 0.55:
        text = f"{clause()} {rng.choice(_LINKS)} {clause()}"
    else:
        text = clause()
    end = "?" if text.split(" ")[1] == "asks" and rng.random() < 0.5 else "."
    return text[0].upper() + text[1:] + end


def generate_corpus(*, num_bytes: int = 300_000, seed: int = 0) -> str:
    """Deterministic English-like text of at least `num_bytes` characters (paragraphs of sentences)."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    size = 0
    while size < num_bytes:
        para = " ".join(_sentence(rng) for _ in range(rng.randint(3, 8)))
        paragraphs.append(para)
        size += len(para) + 2
    return "\n\n".join(paragraphs) + "\n"


def encode(text: str) -> torch.Tensor:
    """Byte-level tokenizer: UTF-8 bytes as int64 token ids in [0, 256)."""
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).to(torch.int64)


def decode(tokens: torch.Tensor) -> str:
    """Inverse of `encode` (invalid UTF-8 sequences are replaced)."""
    return bytes(tokens.to(torch.uint8).tolist()).decode("utf-8", errors="replace")


@functools.lru_cache(maxsize=4)
def _cached_corpus(path: str | None) -> torch.Tensor:
    if path is None:
        return encode(generate_corpus())
    return encode(Path(path).read_text(encoding="utf-8", errors="replace"))


def load_corpus(path: str | os.PathLike[str] | None = None, *, min_tokens: int = 0) -> torch.Tensor:
    """The corpus as int64 byte ids: the generated default, or the text file at `path`."""
    if path is not None and not Path(path).is_file():
        raise ValueError(f"corpus: file {str(path)!r} does not exist; give an existing text file")
    corpus = _cached_corpus(None if path is None else str(Path(path).resolve()))
    if corpus.numel() < min_tokens:
        raise ValueError(f"corpus: {path} holds {corpus.numel()} bytes; at least {min_tokens} are needed "
                         "(seq_len + 1); use a longer file or a shorter --seq-len")
    return corpus


def split_corpus(corpus: torch.Tensor, *, min_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, validation) parts: the validation split is the last VAL_FRACTION of the corpus.
    ValueError when either part holds fewer than `min_tokens` (one window)."""
    n_val = int(corpus.numel() * VAL_FRACTION)
    train, val = corpus[:corpus.numel() - n_val], corpus[corpus.numel() - n_val:]
    if min(train.numel(), val.numel()) < min_tokens:
        raise ValueError(f"corpus: {corpus.numel()} bytes leave {val.numel()} for validation (the last "
                         f"{VAL_FRACTION:.0%}) but a window needs {min_tokens}; use a longer corpus or a "
                         "shorter --seq-len")
    return train, val


def window_length(seq_len: int, arch: str = "decoder") -> int:
    """Corpus bytes one row of a batch reads: seq_len + 1 (the targets are shifted by one), or T5's raw
    span-corruption window that fills seq_len encoder positions."""
    return raw_length(seq_len) if arch == "encoder-decoder" else seq_len + 1


def global_batch(corpus: torch.Tensor, *, step: int, seed: int, global_batch_size: int, seq_len: int,
                 arch: str = "decoder", vocab_size: int = VOCAB_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole batch of optimizer step `step`: (tokens, targets), both int64 [global_batch_size, seq_len]
    (encoder-decoders: tokens [global_batch_size, 2*seq_len], `executor.span_corruption`).

    Rows are windows at offsets drawn from a generator seeded by (seed, step) - no state to carry."""
    width = window_length(seq_len, arch)
    if corpus.numel() < width + 1:
        raise ValueError(f"seq_len={seq_len} needs a corpus of at least {width + 1} bytes")
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    offsets = torch.randint(0, corpus.numel() - width, (global_batch_size,), generator=gen)
    windows = corpus[offsets[:, None] + torch.arange(width)[None, :]]
    if arch == "decoder":
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
    if arch == "encoder-decoder":
        return span_corrupt(windows, seq_len=seq_len, vocab_size=vocab_size, gen=gen)
    return _mask_for_mlm(windows[:, :-1].contiguous(), gen)


def _mask_for_mlm(original: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (Devlin et al. 2019, §3.1); at least one masked position per row."""
    chosen = torch.rand(original.shape, generator=gen) < MLM_PROB
    chosen[torch.arange(original.shape[0]), torch.randint(0, original.shape[1], (original.shape[0],),
                                                          generator=gen)] = True
    action = torch.rand(original.shape, generator=gen)
    random_bytes = torch.randint(1, VOCAB_SIZE, original.shape, generator=gen)
    tokens = original.clone()
    tokens[chosen & (action < 0.8)] = MASK_ID
    swap = chosen & (action >= 0.8) & (action < 0.9)
    tokens[swap] = random_bytes[swap]
    targets = torch.where(chosen, original, torch.full_like(original, IGNORE_INDEX))
    return tokens, targets


def rank_rows(batch: torch.Tensor, *, dp_rank: int, dp_size: int) -> torch.Tensor:
    """Data-parallel rank `dp_rank`'s contiguous slice of the global batch."""
    rows = batch.shape[0]
    if rows % dp_size:
        raise ValueError(f"global_batch_size={rows} is not divisible by dp={dp_size}")
    per = rows // dp_size
    return batch[dp_rank * per:(dp_rank + 1) * per]


class BatchSource:
    """One rank's view of the data: `batch(step)` -> this DP rank's (tokens, targets) rows of the
    corpus's training split (`split_corpus`; `validation` is the held-out part)."""

    def __init__(self, corpus: torch.Tensor, *, seed: int, global_batch_size: int, seq_len: int,
                 arch: str = "decoder", dp_rank: int = 0, dp_size: int = 1, vocab_size: int = VOCAB_SIZE) -> None:
        if global_batch_size % dp_size:
            raise ValueError(f"global_batch_size={global_batch_size} is not divisible by dp={dp_size}")
        self.corpus, self.validation = split_corpus(corpus, min_tokens=window_length(seq_len, arch) + 1)
        self.seed, self.global_batch_size, self.seq_len, self.arch = seed, global_batch_size, seq_len, arch
        self.dp_rank, self.dp_size, self.vocab_size = dp_rank, dp_size, vocab_size

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._rows(self.corpus, step)

    def validation_batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This DP rank's rows of validation batch `index` (0, 1, ...): windows of the held-out split,
        drawn like `batch(-1 - index)` (training steps are >= 1), the same at every evaluation."""
        return self._rows(self.validation, -1 - index)

    def _rows(self, corpus: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, targets = global_batch(corpus, step=step, seed=self.seed, global_batch_size=self.global_batch_size,
                                       seq_len=self.seq_len, arch=self.arch, vocab_size=self.vocab_size)
        return (rank_rows(tokens, dp_rank=self.dp_rank, dp_size=self.dp_size),
                rank_rows(targets, dp_rank=self.dp_rank, dp_size=self.dp_size))
