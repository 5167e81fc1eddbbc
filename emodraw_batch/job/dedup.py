"""Repeated texts go through the model once per shard; every copy gets the first one's result.

Real dumps repeat the same text many times (retweets, copy-paste campaigns, bots). Within a
shard, each window's texts are looked up by a 128-bit BLAKE2b hash of the exact string the
classifier receives (the cleaned text, `text.prepare`): only the first occurrence of each text
is tokenized and run; its result (every column of its `Prediction`) is kept by slot and copied
to later copies, bit for bit. Texts are never kept, only hashes: the state costs 49 bytes per
distinct text remembered (16 hash + 4 slot + the result: 6 float32 probabilities, token count,
flag), and at most ~66 bytes a text at its peak, when merging index runs briefly doubles the
index (tests/test_dedup.py bounds both). The results are kept window by window: one growable
array used to copy itself as it grew, a peak of ~97 bytes a text.

A shard remembers at most `limit` distinct texts (`dedup_texts`), so memory depends on that
setting, not on how many distinct texts a shard holds: the texts are remembered in two
generations of `limit / 2`; when the newer one is full, the older one is forgotten (its hashes
and results) and the newer one becomes the older. A copy of a text seen within the last `limit / 2`
distinct texts is always served; an older one runs again (and is remembered again), which costs
one more forward pass and gives the same result, but for the last bits that batching changes. Retweets and campaigns repeat in bursts, which the
window of recent texts catches.

A 128-bit hash makes a collision (two different texts served as one) practically impossible:
about 1e-27 for a shard of a million distinct texts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from emodraw_batch.inference.classifier import Prediction

KEY = np.dtype("S16")  # a BLAKE2b-128 digest; numpy sorts and compares these as 16-byte strings


def digests(texts: list[str]) -> np.ndarray:
    """One 16-byte hash per text (UTF-8), as an array of `KEY`."""
    if not texts:
        return np.empty(0, KEY)
    # surrogatepass: a text that is not valid Unicode still hashes to its own bytes (never an error)
    raw = b"".join(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts)
    return np.frombuffer(raw, dtype=KEY)


@dataclass(frozen=True)
class WindowPlan:
    """Which texts of a window the model runs (`run`: positions of first occurrences of texts new to
    the shard, in row order) and where each text's result is (`slots`, one per text)."""

    run: np.ndarray
    slots: np.ndarray
    first_slot: int  # the slot of run[0]: the new texts take first_slot, first_slot + 1, ...
    keep_from: int = 0  # no window planned after this one uses a slot below it: their results may go

    @property
    def repeats(self) -> int:
        """Texts of this window served by a copy labelled before (in this window or an earlier one)."""
        return len(self.slots) - len(self.run)


class _HashIndex:
    """Hash -> slot for every text seen, as a few sorted runs of numpy arrays (no per-item Python objects).

    New keys arrive as a sorted run; a run is merged into the one before it once it is at least half
    its size, so there are at most ~log2(n) runs and each key is copied O(log n) times in all.
    """

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The slot of each key in `keys` (sorted, distinct), -1 where unknown."""
        slots = np.full(len(keys), -1, dtype=np.int64)
        for run_keys, run_slots in self.runs:
            pos = np.searchsorted(run_keys, keys)
            inside = pos < len(run_keys)
            hit = np.zeros(len(keys), dtype=bool)
            hit[inside] = run_keys[pos[inside]] == keys[inside]
            slots[hit] = run_slots[pos[hit]]
        return slots

    def add(self, keys: np.ndarray, slots: np.ndarray) -> None:
        """Add new `keys` (sorted, none known yet) with their slots."""
        if not len(keys):
            return
        self.runs.append((keys, slots.astype(np.int32)))  # 2**31 distinct texts a shard is far off
        while len(self.runs) > 1 and 2 * len(self.runs[-1][0]) >= len(self.runs[-2][0]):
            (big_keys, big_slots), (keys, slots) = self.runs[-2], self.runs.pop()
            at = np.searchsorted(big_keys, keys)
            self.runs[-1] = (np.insert(big_keys, at, keys), np.insert(big_slots, at, slots))

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + s.nbytes for k, s in self.runs)


class _Store:
    """The results by slot: each window's new results as they came (one array per `Prediction` column).

    Kept window by window rather than in one growable array: growing one copied it (old and new
    alive at once) and kept up to half of it as slack, so a shard's peak rose by more than the results.
    """

    def __init__(self) -> None:
        self.chunks: list[dict[str, np.ndarray]] = []
        self.starts: list[int] = []  # the first slot of each chunk
        self.size = 0  # slots appended so far (forgetting chunks does not renumber the others)

    def forget_before(self, slot: int) -> None:
        """Drop the chunks whose slots are all below `slot` (a forgotten generation)."""
        while self.chunks and self.starts[0] + len(next(iter(self.chunks[0].values()))) <= slot:
            del self.chunks[0], self.starts[0]

    def append(self, columns: dict[str, np.ndarray]) -> None:
        n = len(next(iter(columns.values())))
        if n:
            self.starts.append(self.size)
            self.chunks.append({name: np.array(values, copy=True) for name, values in columns.items()})
            self.size += n

    def gather(self, slots: np.ndarray, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every column's values at `slots` (columns and dtypes as in `like`, one window's results)."""
        out = {name: np.empty((len(slots), *values.shape[1:]), values.dtype) for name, values in like.items()}
        chunk = np.searchsorted(np.asarray(self.starts), slots, side="right") - 1
        for k in np.unique(chunk).tolist():
            rows = np.flatnonzero(chunk == k)
            at = slots[rows] - self.starts[k]
            for name, values in out.items():
                values[rows] = self.chunks[k][name][at]
        return out

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for chunk in self.chunks for c in chunk.values())


class Repeats:
    """One shard's memory of the texts labelled so far: `plan` a window, then `serve` its prediction.

    Windows must be served in the order they were planned. `plan` may run ahead of `serve` (in the
    prefetch thread, a window ahead): it touches only the hash indexes, `serve` only the results.
    `limit`: the most distinct texts remembered (None: every one in the shard).
    """

    def __init__(self, limit: int | None = None) -> None:
        self._generation = max(limit // 2, 1) if limit else None  # distinct texts a generation holds
        self._older, self._newer = _HashIndex(), _HashIndex()
        self._newer_from = 0  # the first slot of the newer generation
        self._keep_from = 0  # the first slot of the older one: slots below it are forgotten
        self._planned = 0  # slots handed out by plan
        self._store = _Store()

    def plan(self, texts: list[str]) -> WindowPlan:
        """Find the texts of this window that the model must run; give each text its result's slot."""
        keys = digests(texts)
        unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        slot_of = self._newer.find(unique)
        unknown = np.flatnonzero(slot_of < 0)
        slot_of[unknown] = self._older.find(unique[unknown])
        new = np.flatnonzero(slot_of < 0)
        new = new[np.argsort(first[new], kind="stable")]  # the new texts in row order
        slot_of[new] = self._planned + np.arange(len(new))
        first_slot = self._planned
        self._planned += len(new)
        by_key = np.sort(new)  # `unique` is sorted, so its positions in order keep the new keys sorted
        self._newer.add(unique[by_key], slot_of[by_key])
        if self._generation is not None and self._planned - self._newer_from >= self._generation:
            # The newer generation is full: forget the older one. Windows planned from now on only
            # find slots from `_keep_from` on; `serve` drops the results below it once this one is served.
            self._older, self._newer = self._newer, _HashIndex()
            self._keep_from, self._newer_from = self._newer_from, self._planned
        return WindowPlan(run=first[new], slots=slot_of[inverse.reshape(-1)], first_slot=first_slot,
                          keep_from=self._keep_from)

    def serve(self, plan: WindowPlan, prediction: Prediction) -> Prediction:
        """The prediction for every text of the window, from `prediction` of the texts `plan.run`."""
        if plan.first_slot != self._store.size:
            raise RuntimeError("Repeats.serve: windows must be served in the order they were planned")
        fields = ((f.name, getattr(prediction, f.name)) for f in dataclasses.fields(prediction))
        columns = {name: np.asarray(value) for name, value in fields if value is not None}  # None: an unused column
        self._store.append(columns)
        served = dataclasses.replace(prediction, **self._store.gather(plan.slots, columns))
        self._store.forget_before(plan.keep_from)
        return served

    @property
    def nbytes(self) -> int:
        """The state's size in bytes (hash indexes and results)."""
        return self._older.nbytes + self._newer.nbytes + self._store.nbytes
