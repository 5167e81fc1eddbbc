"""From texts to padded batches: tokenize in bulk, sort by length, pack under a token budget, pad.

numpy and the Rust tokenizer only (no torch), so it runs in a prefetching thread and imports
fast. A batch is (row indices, padded input ids, the rows' lengths); the forward backends make
the attention mask from the lengths.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from emodraw_batch.inference.batching import equal_length_groups, pack
from emodraw_batch.errors import ConfigError
from emodraw_batch.inference.chunks import Chunker, check_aggregation, special_tokens
from emodraw_batch.inference.fast_paths import bucket_width
from emodraw_batch.inference.token_rows import EncodedIds

# Texts per call of the Rust tokenizer: enough for its thread pool, few enough that the call's
# Encodings (~6 KB for a tweet: tokens, masks, offsets; only the ids are kept) stay small. Freed
# right after, they are what fragmented malloc's heap as windows went by: with 4,096 texts a call
# (~25 MB of Encodings), peak RSS rose 100,000 -> 400,000 rows by twice as much as with 256 (docs/performance.md).
ENCODE_CHUNK = 256
# Characters per call in chunk mode, where a text may be thousands of tokens long (an Encoding
# weighs ~50 bytes per token): ENCODE_CHUNK tweets' worth, so a call stays within a few MB.
ENCODE_CHARS = ENCODE_CHUNK * 512

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # (row indices, input ids (rows, width), lengths)


def flatten(ids: list[list[int]] | EncodedIds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat, starts, lengths): rows of token ids stored back to back, the layout `pad_batch` pads from."""
    ids = EncodedIds.of(ids)  # an EncodedIds is already so: no copy
    return ids.flat, ids.starts, ids.lengths


def pad_batch(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) of shape (rows, longest) from rows stored back to back in `flat`."""
    width = int(lengths.max()) if len(lengths) else 0
    position = np.arange(width)
    mask = position[None, :] < lengths[:, None]
    # Positions past a row's end read some valid index and are then overwritten with padding.
    index = np.where(mask, starts[:, None] + position[None, :], 0)
    input_ids = np.where(mask, flat[index] if len(flat) else 0, pad_id).astype(np.int64)
    return input_ids, mask.astype(np.int64)


def truncating_tokenizer(tokenizer_json: str, max_length: int, side: str) -> Any:
    """A private Rust tokenizer from its JSON, set to truncate exactly as `tokenizer(..., truncation=True)`.

    Calling it directly skips the per-row Python that the transformers wrapper spends turning
    every encoding into dicts of lists (about a third of tokenization time); a private copy,
    because the wrapper resets the shared one's truncation state on every call.
    """
    from tokenizers import Tokenizer

    rust = Tokenizer.from_str(tokenizer_json)
    rust.no_padding()
    rust.enable_truncation(max_length, direction=side)
    return rust


class Batcher:
    """Sort, pack, pad: the classifier's inputs, in the order the model runs them.

    `batch_tokens` may change between calls (a test or a caller re-sizing the budget): batches
    prepared for another budget are packed again.
    """

    def __init__(self, tokenizer_json: str, max_length: int, side: str, pad_id: int, batch_tokens: int,
                 pad_multiple: int = 1, prepare_in_encode: bool = False, equal_lengths: float = 0.0) -> None:
        self.rust = truncating_tokenizer(tokenizer_json, max_length, side)
        self.side, self.max_length = side, max_length
        self.chunker: Chunker | None = None  # chunk mode (see long_texts)
        self.pad_id = pad_id
        self.batch_tokens = batch_tokens
        self.pad_multiple = max(int(pad_multiple), 1)
        self.prepare_in_encode = prepare_in_encode
        self.equal_lengths = float(equal_lengths)  # share of the budget a length group needs to run unpadded

    def long_texts(self, mode: str, overlap: int | None, max_chunks: int, aggregation: str) -> dict[str, Any]:
        """Set how texts longer than max_length are read: `truncate`, or `chunk` (windows of max_length
        tokens sharing `overlap`, None: a quarter of them; chunks.py). Returns the description recorded with the labels."""
        if mode == "truncate":
            return {"mode": "truncate"}
        if mode != "chunk":
            raise ConfigError(f"long_texts must be truncate or chunk; got {mode!r}. Pick one of them.")
        check_aggregation(aggregation)
        prefix, suffix = special_tokens(self.rust)
        overlap = self.max_length // 4 if overlap is None else overlap
        self.chunker = Chunker(self.max_length, overlap, max_chunks, prefix, suffix)
        self.rust.enable_truncation(self.chunker.token_limit, direction=self.side)
        return self.chunker.describe(aggregation)

    def encode(self, texts: list[str]) -> tuple[EncodedIds, np.ndarray]:
        """Token ids (truncated to max_length) and a truncated flag per text, in bulk Rust calls.

        In chunk mode the ids are chunk rows, with `ids.chunks` mapping them to the texts, and a
        text is truncated when its tokens go past `max_chunks` windows.
        Safe to call from a prefetching thread while the model runs: the Rust call releases the GIL.
        """
        cut = None
        if self.chunker is not None:
            texts, cut = self.chunker.cut(texts, self.side)
        ids, truncated = self._encode(texts)
        if self.chunker is not None:
            ids, chunks = self.chunker.split(ids)
            truncated = truncated | cut
            ids.chunks = chunks
        if self.prepare_in_encode:
            ids.batches, ids.key = list(self.pack(ids)), self.key()
        return ids, truncated

    def _encode(self, texts: list[str]) -> tuple[EncodedIds, np.ndarray]:
        encode_batch = getattr(self.rust, "encode_batch_fast", self.rust.encode_batch)  # _fast: no offsets
        pieces: list[EncodedIds] = []
        truncated = np.zeros(len(texts), dtype=bool)
        # In slices: a Rust Encoding (tokens, masks, offsets) weighs ~6 KB for a tweet, so a whole
        # 50k-row window at once would briefly cost ~300 MB; only the ids are kept, back to back.
        for start, stop in self._slices(texts):
            encodings = encode_batch(texts[start:stop])
            pieces.append(EncodedIds.from_rows([e.ids for e in encodings]))
            truncated[start:stop] = [len(e.overflowing) > 0 for e in encodings]
        return EncodedIds.joined(pieces), truncated

    def _slices(self, texts: list[str]) -> Iterator[tuple[int, int]]:
        """(start, stop) of each Rust call: ENCODE_CHUNK texts, and in chunk mode ENCODE_CHARS characters too."""
        if self.chunker is None:
            yield from ((s, min(s + ENCODE_CHUNK, len(texts))) for s in range(0, len(texts), ENCODE_CHUNK))
            return
        start, chars = 0, 0
        for i, text in enumerate(texts):
            if i > start and (i - start >= ENCODE_CHUNK or chars + len(text) > ENCODE_CHARS):
                yield start, i
                start, chars = i, 0
            chars += len(text)
        if start < len(texts):
            yield start, len(texts)

    def key(self) -> tuple[int, int, int, float]:
        return (int(self.batch_tokens), self.pad_multiple, int(self.pad_id), self.equal_lengths)

    def batches(self, ids: list[list[int]]) -> Iterator[Batch]:
        """Each batch in run order: prepared by `encode` for this very budget, or packed now."""
        ready = getattr(ids, "batches", None) if getattr(ids, "key", None) == self.key() else None
        return iter(ready) if ready is not None else self.pack(ids)

    def pack(self, ids: list[list[int]]) -> Iterator[Batch]:
        """The rows' batches, longest first, each within the token budget.

        With pad_multiple > 1 each batch is padded to its width rounded up (a length bucket), and
        the budget counts the rounded widths; the extra positions are padding under the mask.
        With equal_lengths > 0, large groups of rows of one length first get batches of their own,
        unpadded (no mask; not rounded up either, which would bring the mask back); see
        batching.equal_length_groups.
        """
        if not ids:
            return
        flat, starts, lengths = flatten(ids)
        multiple = self.pad_multiple
        for batch in self.row_batches(lengths):
            input_ids, _ = pad_batch(flat, starts[batch], lengths[batch], self.pad_id)
            width = bucket_width(input_ids.shape[1], multiple)
            unpadded = self.equal_lengths > 0 and int(lengths[batch].min()) == input_ids.shape[1]
            if width > input_ids.shape[1] and not unpadded:
                input_ids = np.pad(input_ids, ((0, 0), (0, width - input_ids.shape[1])), constant_values=self.pad_id)
            yield batch, input_ids, lengths[batch]

    def row_batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Row indices of each batch, longest first: equal-length batches (if on) and the packed rest."""
        multiple = self.pad_multiple
        widths = np.where(lengths > 0, -(-lengths // multiple) * multiple, 0) if multiple > 1 else lengths
        if self.equal_lengths <= 0:
            return list(pack(widths, self.batch_tokens))
        min_tokens = max(math.ceil(self.equal_lengths * self.batch_tokens), 1)
        equal, rest = equal_length_groups(lengths, self.batch_tokens, min_tokens)
        mixed = [rest[batch] for batch in pack(widths[rest], self.batch_tokens)]
        # Longest first over both kinds (a stable sort keeps each kind's own order within a width).
        return sorted(equal + mixed, key=lambda batch: -int(lengths[batch].max()))
