"""Token ids of many rows, back to back in one array: what `Batcher.encode` returns for a window.

Held as Python lists of ints, a 50,000-row window of tweets took ~75 MB (a list, and an int object
per token) and 1.3 million objects, made in the tokenizing thread and freed in the model's, window
after window (docs/performance.md, Memory). Here a row costs 4 bytes a token plus 16 for its
start and length, and the batcher pads straight from the array (`batcher.pad_batch`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

DTYPE = np.int32  # token ids: every vocabulary here is far below 2**31


class EncodedIds:
    """The token ids of `len(self)` rows: row i is `flat[starts[i] : starts[i] + lengths[i]]`.

    Reads like a list of rows (`len`, indexing and iteration give int arrays; `==` compares the
    content with another EncodedIds or a list of lists). May carry the window's batches ready to
    run (`batches`, made for the budget in `key`; `Batcher.batches`) and, in chunk mode, the
    map from these chunk rows back to the texts (`chunks`).
    """

    def __init__(self, flat: np.ndarray | None = None, lengths: np.ndarray | None = None) -> None:
        self.flat = np.zeros(0, DTYPE) if flat is None else np.asarray(flat, DTYPE)
        self.lengths = np.zeros(0, np.int64) if lengths is None else np.asarray(lengths, np.int64)
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.batches: list[Any] | None = None
        self.key: tuple[int, int, int, float] | None = None  # (batch_tokens, pad_multiple, pad_id, equal_lengths) the batches were made for
        self.chunks: Any = None  # chunks.ChunkMap in chunk mode

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[int]]) -> EncodedIds:
        """From rows given one by one (lists or arrays of ints)."""
        rows = list(rows)
        lengths = np.fromiter(map(len, rows), np.int64, count=len(rows))
        if any(isinstance(r, np.ndarray) for r in rows):
            return cls(np.concatenate([np.asarray(r, DTYPE) for r in rows]) if rows else None, lengths)
        return cls(np.fromiter(itertools.chain.from_iterable(rows), DTYPE, count=int(lengths.sum())), lengths)

    @classmethod
    def of(cls, ids: EncodedIds | Iterable[Sequence[int]]) -> EncodedIds:
        """`ids` itself if it is one already (no copy), else `from_rows(ids)`."""
        return ids if isinstance(ids, EncodedIds) else cls.from_rows(ids)

    @classmethod
    def joined(cls, pieces: Sequence[EncodedIds]) -> EncodedIds:
        """The rows of `pieces`, one after the other."""
        if not pieces:
            return cls()
        return cls(np.concatenate([p.flat for p in pieces]), np.concatenate([p.lengths for p in pieces]))

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = self.starts[i]
        return self.flat[start : start + self.lengths[i]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.flat[s : s + n] for s, n in zip(self.starts.tolist(), self.lengths.tolist()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EncodedIds):
            if not isinstance(other, (list, tuple)):
                return NotImplemented
            other = EncodedIds.from_rows(other)
        return np.array_equal(self.lengths, other.lengths) and np.array_equal(self.flat, other.flat)

    __hash__ = None  # type: ignore[assignment]  # mutable content, compared by value

    def tolist(self) -> list[list[int]]:
        """The rows as lists of ints."""
        return [row.tolist() for row in self]

    def __repr__(self) -> str:
        return f"EncodedIds({len(self)} rows, {len(self.flat)} tokens)"


def row_lengths(ids: Sequence[Sequence[int]]) -> np.ndarray:
    """The length of every row of `ids` (an EncodedIds or a list of lists), as int64."""
    if isinstance(ids, EncodedIds):
        return ids.lengths
    return np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
