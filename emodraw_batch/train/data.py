"""Training data in memory: token ids stored back to back, targets, and the batches over them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from emodraw_batch.inference.batching import length_order
from emodraw_batch.inference.batcher import flatten, pad_batch

# Batches are length-sorted within buckets of this many batches, then the batch order is shuffled:
# little padding, yet every epoch sees a fresh mix.
BUCKET_BATCHES = 50


@dataclass(frozen=True)
class Tokens:
    """Token ids of n texts, back to back in `flat` (the layout `model.pad_batch` pads from)."""

    flat: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, ids: list[list[int]]) -> Tokens:
        return cls(*flatten(ids))

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows: np.ndarray, pad_id: int) -> tuple[Any, Any]:
        """(input_ids, attention_mask) tensors for `rows`, padded to the longest of them."""
        import torch

        input_ids, mask = pad_batch(self.flat, self.starts[rows], self.lengths[rows], pad_id)
        return torch.from_numpy(input_ids), torch.from_numpy(mask)


@dataclass(frozen=True)
class Split:
    """One split's texts as tokens, with what the model should predict for each row.

    `labels` are class indices, -1 where a row has none. `soft`, when given, holds target
    probabilities (n, classes), e.g. a teacher's; then every row has a target.
    """

    tokens: Tokens
    labels: np.ndarray
    soft: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def reference(self) -> np.ndarray:
        """The class each row is scored against: its label, else the top soft target."""
        if self.soft is None:
            return self.labels
        return np.where(self.labels >= 0, self.labels, self.soft.argmax(axis=1))


def encode(tokenizer: Any, texts: list[str], max_length: int) -> Tokens:
    """Tokenize (with the special tokens, truncated to max_length) as `run` does."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False,
                    return_token_type_ids=False)
    return Tokens.of(enc["input_ids"])


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort by length inside buckets of BUCKET_BATCHES batches, cut, shuffle the batch order.

    Always ceil(n / batch_size) batches: buckets hold a whole number of batches,
    so only the very last batch can be short.
    """
    order = rng.permutation(len(lengths))
    bucket = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), bucket):
        part = order[start : start + bucket]
        part = part[length_order(lengths[part])]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
