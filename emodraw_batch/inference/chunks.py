"""Long texts cut into overlapping windows (chunks), and the texts' probabilities put back together.

A text's token ids are `prefix + body + suffix` (the special tokens the tokenizer adds, e.g.
`[CLS] ... [SEP]`). A text that fits in `max_length` tokens is one chunk: its ids unchanged, so
its probabilities are those of truncate mode. A longer one becomes windows of `max_length`
tokens, each `prefix + a slice of the body + suffix` (special tokens are never split and every
window has its own), consecutive slices sharing `overlap` tokens. Every chunk is a row for the
batcher, so the chunks of many texts are sorted and packed together; `ChunkMap` says which text
each row belongs to, and `aggregate` turns the rows' probabilities into the texts'.

At most `max_chunks` windows per text: the tokenizer truncates to the tokens they cover
(`token_limit`), and a text is first cut to `char_limit` characters, far more than those tokens
take, so a 1 MB review never costs a full tokenization. numpy only (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from emodraw_batch.errors import ConfigError
from emodraw_batch.inference.token_rows import EncodedIds, row_lengths

# Characters per token that no text reaches on average over a whole window budget (English runs
# at ~4-5 characters per ALBERT token): the characters kept before tokenizing, a generous bound.
CHARS_PER_TOKEN = 32
AGGREGATIONS = ("weighted", "mean", "max")


@dataclass(frozen=True)
class ChunkMap:
    """Chunk rows -> texts: `starts[i]` is text i's first row, `n_chunks[i]` its row count (>= 1),
    `n_tokens[i]` the tokens of the text the model sees (special tokens once, overlaps once)."""

    starts: np.ndarray
    n_chunks: np.ndarray
    n_tokens: np.ndarray


@dataclass(frozen=True)
class Chunker:
    """How texts become chunk rows: `max_length` tokens a window, `overlap` shared, `max_chunks` at most."""

    max_length: int
    overlap: int
    max_chunks: int
    prefix: int = 1  # special tokens before the text's tokens
    suffix: int = 1  # and after

    def __post_init__(self) -> None:
        if self.body <= self.overlap or self.max_chunks < 1:
            raise ConfigError(
                f"--chunk-overlap must be smaller than a window's text tokens and --max-chunks at least 1: with "
                f"--max-length {self.max_length} a window holds {self.body} text tokens besides its "
                f"{self.prefix + self.suffix} special tokens; got --chunk-overlap {self.overlap}, --max-chunks "
                f"{self.max_chunks}. Lower --chunk-overlap (a quarter of --max-length is usual) or raise --max-length."
            )

    @property
    def body(self) -> int:
        """Text tokens per window (the special tokens excluded)."""
        return self.max_length - self.prefix - self.suffix

    @property
    def step(self) -> int:
        return self.body - self.overlap

    @property
    def token_limit(self) -> int:
        """Tokens (special ones included) that `max_chunks` windows cover: the tokenizer truncates there."""
        return self.prefix + self.suffix + self.body + (self.max_chunks - 1) * self.step

    @property
    def char_limit(self) -> int:
        """Characters kept before tokenizing: far more than `token_limit` tokens ever take."""
        return CHARS_PER_TOKEN * self.token_limit

    def count(self, n_tokens: int) -> int:
        """Windows for a text of `n_tokens` tokens (special tokens included), before the cap."""
        extra = max(n_tokens - self.prefix - self.suffix - self.body, 0)
        return 1 + -(-extra // self.step)

    def split(self, ids: EncodedIds | list[list[int]]) -> tuple[EncodedIds, ChunkMap]:
        """Chunk rows (in text order, each text's windows in reading order) and the map back to the texts."""
        ids = EncodedIds.of(ids)
        n_tokens = ids.lengths.astype(np.int32)
        n_chunks = np.ones(len(ids), dtype=np.int32)
        long = np.flatnonzero(ids.lengths > self.max_length)
        if not len(long):  # the usual window: every text is one chunk, its ids as they are
            return ids, ChunkMap(np.arange(len(ids)), n_chunks, n_tokens)
        pre, suf, body, step = self.prefix, self.suffix, self.body, self.step
        rows: list[np.ndarray] = []
        done = 0
        for i in long.tolist():
            rows.extend(ids[j] for j in range(done, i))  # the short texts before this long one, unchanged
            row = ids[i]
            head, text, tail = row[:pre], row[pre : len(row) - suf], row[len(row) - suf :]
            windows = [np.concatenate([head, text[s : s + body], tail]) for s in range(0, max(len(text) - self.overlap, 1), step)]
            rows.extend(windows[: self.max_chunks])
            n_chunks[i] = min(len(windows), self.max_chunks)
            done = i + 1
        rows.extend(ids[j] for j in range(done, len(ids)))
        starts = np.cumsum(n_chunks) - n_chunks
        return EncodedIds.from_rows(rows), ChunkMap(starts, n_chunks, n_tokens)

    def cut(self, texts: list[str], side: str) -> tuple[list[str], np.ndarray]:
        """Texts longer than `char_limit` characters cut to it (on the truncation side), and which were."""
        limit = self.char_limit
        cut = np.fromiter((len(t) > limit for t in texts), dtype=bool, count=len(texts))
        if not cut.any():
            return texts, cut
        keep = (lambda t: t[-limit:]) if side == "left" else (lambda t: t[:limit])
        return [keep(t) if c else t for t, c in zip(texts, cut)], cut

    def describe(self, aggregation: str) -> dict[str, Any]:
        return {"mode": "chunk", "overlap": self.overlap, "max_chunks": self.max_chunks, "aggregation": aggregation}


def special_tokens(rust: Any) -> tuple[int, int]:
    """(prefix, suffix): how many special tokens the tokenizer puts before and after a text's tokens."""
    mask = rust.encode("a").special_tokens_mask
    prefix = next((i for i, m in enumerate(mask) if not m), len(mask))
    suffix = next((i for i, m in enumerate(reversed(mask)) if not m), 0)
    return prefix, suffix


def check_aggregation(how: str) -> None:
    if how not in AGGREGATIONS:
        raise ConfigError(f"chunk_aggregation must be one of {', '.join(AGGREGATIONS)}; got {how!r}. Pick one of them.")


def aggregate(probs: np.ndarray, chunks: ChunkMap, weights: np.ndarray, how: str) -> np.ndarray:
    """Each text's probabilities from its chunk rows' (`probs`, rows in chunk order).

    weighted: mean weighted by each chunk's tokens (`weights`); mean: plain mean; max: each
    label's highest probability over the chunks, renormalised to sum to 1. A text of one chunk
    keeps that chunk's probabilities exactly (truncate mode's).
    """
    check_aggregation(how)
    if len(chunks.starts) == 0:
        return np.empty((0, probs.shape[1]), dtype=np.float32)
    if how == "max":
        out = np.maximum.reduceat(probs.astype(np.float64), chunks.starts, axis=0)
        out /= out.sum(axis=1, keepdims=True)
    else:
        w = weights.astype(np.float64) if how == "weighted" else np.ones(len(probs))
        out = np.add.reduceat(probs * w[:, None], chunks.starts, axis=0) / np.add.reduceat(w, chunks.starts)[:, None]
    single = chunks.n_chunks == 1
    out[single] = probs[chunks.starts[single]]
    return out.astype(np.float32)


def per_text(probs: np.ndarray, ids: EncodedIds | list[list[int]], truncated: np.ndarray, how: str | None) -> tuple[np.ndarray, ...]:
    """(probabilities, n_tokens, truncated, n_chunks) per text (a Prediction's fields) from the rows
    `ids` that `probs` were computed for. Rows from a plain `encode` (no `chunks` map) are one per text.
    """
    lengths = row_lengths(ids).astype(np.int32)
    chunks: ChunkMap | None = getattr(ids, "chunks", None)
    if chunks is None:
        return probs, lengths, truncated, np.ones(len(ids), dtype=np.int32)
    return aggregate(probs, chunks, lengths, how or "weighted"), chunks.n_tokens, truncated, chunks.n_chunks
