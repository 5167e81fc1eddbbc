"""Sorted-length batching under a token budget.

Texts are sorted by token length once (argsort); consecutive runs of that order
are packed so that rows x longest row <= budget. Padding is then small, and a
batch of short tweets holds many more rows than a batch of long reviews.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Indices that sort rows by token length, longest first.

    Longest first means the biggest batch runs first, so an out-of-memory
    budget fails at once instead of at the end of a long window. The sort is
    stable so equal lengths keep their input order (deterministic batches).
    """
    return np.argsort(-np.asarray(lengths), kind="stable")


def pack(lengths: np.ndarray, budget: int, max_rows: int | None = None) -> Iterator[np.ndarray]:
    """Yield arrays of row indices, in length order, each within the token budget.

    `lengths` are token counts per row (original order). Every row appears in
    exactly one batch. A single row longer than the budget gets a batch of its
    own rather than being dropped.
    """
    lengths = np.asarray(lengths)
    order = length_order(lengths)
    start, n = 0, len(order)
    while start < n:
        # Longest-first order: the first row of a batch is its longest row.
        longest = max(int(lengths[order[start]]), 1)
        rows = max(budget // longest, 1)
        if max_rows is not None:
            rows = min(rows, max_rows)
        yield order[start : start + rows]
        start += rows


def invert(order: np.ndarray) -> np.ndarray:
    """The permutation that undoes `order` (result[order] = arange)."""
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return inverse


def equal_length_groups(lengths: np.ndarray, budget: int, min_tokens: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Split rows into batches whose rows all have one length, and the rest.

    Why: a batch without padding needs no attention mask, and without a mask SDPA may use its
    flash kernel on CUDA (with one it falls back to the memory-efficient kernel). In a sorted
    window most rows sit in large groups of one length, so splitting the packed batches at length
    boundaries costs little: only groups of at least `min_tokens` tokens get batches of their own
    (at most `budget` tokens each; a group's last, smaller batch too if it still holds
    `min_tokens`), so no tiny batches are launched. Returns (those batches, longest first; the
    indices of the remaining rows, which are packed as before, with padding and a mask).
    """
    lengths = np.asarray(lengths)
    order = length_order(lengths)
    ordered = lengths[order]
    bounds = np.flatnonzero(np.diff(ordered)) + 1
    equal: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for group in np.split(order, bounds) if len(order) else []:
        length = max(int(lengths[group[0]]), 1)
        rows = max(budget // length, 1)
        for start in range(0, len(group), rows):
            part = group[start : start + rows]
            (equal if len(part) * length >= min_tokens else rest).append(part)
    left = np.concatenate(rest) if rest else np.zeros(0, dtype=order.dtype)
    return equal, left
