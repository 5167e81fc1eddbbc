"""The classifier: load a checkpoint once, then `classifier(texts) -> Prediction`.

It composes three pieces, each in its own module: the batcher (texts -> sorted, packed, padded
batches; batcher.py), a forward backend (a batch -> probabilities; backends/), and the loader
that picks and prepares the backend (loaded.py). Where and how precisely it runs is device.py's
job, the GPU fast-path settings fast_paths.py's. torch and transformers are imported lazily, so
the CLI's `--help` and the input validation never pay for them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from emodraw_batch.config import DEFAULT_MODEL
from emodraw_batch.errors import ModelError
from emodraw_batch.inference.backends import Pending, collect
from emodraw_batch.inference import chunks
from emodraw_batch.inference.batcher import Batcher, EncodedIds
from emodraw_batch.inference.device import default_batch_tokens, resolve_device, resolve_precision
from emodraw_batch.inference.fast_paths import EXACT, fast_path_settings
from emodraw_batch.inference.head_start import HeadStart


@dataclass(frozen=True)
class Prediction:
    """Per row: probabilities (n, labels) float32, tokens the model saw, truncated flag, chunks (None: 1 each)."""

    probs: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray
    n_chunks: np.ndarray | None = None


def column_name(label: str) -> str:
    """`prob_<label>` with the label made safe as a column name ("Very Sad" -> prob_very_sad)."""
    return "prob_" + (re.sub(r"[^0-9a-zA-Z]+", "_", label).strip("_").lower() or "label")


class EmotionClassifier:
    """A stateful callable: loads the checkpoint once, then classifies lists of texts.

    Sort, run, unsort: texts are tokenized in bulk, ordered by length, packed under the token
    budget, run by the backend and put back in order. `submit` queues a window and `collect`
    waits for it, so a caller can prepare the next window while the GPU runs this one.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        max_length: int = 128,
        batch_tokens: int | None = None,
        allow_pickle: bool = False,
        runtime: str = "torch",
        half_weights: bool | str | None = None,
        staging: bool | None = None,
        prepare_in_encode: bool | None = None,
        pad_multiple: int | None = None, equal_lengths: float | None = None,
        attn_implementation: str | None = None,
        compile: bool | str | None = None,  # noqa: A002 - the name torch uses
        long_texts: str = "truncate", chunk_overlap: int | None = None, max_chunks: int = 16, chunk_aggregation: str = "weighted",
    ) -> None:
        """`runtime` runs the forward pass: torch, onnx (ONNX Runtime: CPU, fp32; backends/onnx_forward.py) or
        auto (onnx where it can run and is installed, else torch). `half_weights` to `compile`: the GPU fast
        paths (FAST_PATH_DEFAULTS; None: the module default), each with the exact path's labels. `long_texts`
        "chunk" labels texts longer than `max_length` whole, window by window (chunks.py)."""
        from emodraw_batch.inference.backends import onnx_forward
        from emodraw_batch.inference.loaded import load

        given = dict(half_weights=half_weights, staging=staging, prepare_in_encode=prepare_in_encode,
                     pad_multiple=pad_multiple, attn_implementation=attn_implementation, compile=compile,
                     equal_lengths=equal_lengths)
        self.fast = fast_path_settings(given)
        self.name = model
        self.device = resolve_device(device)
        if self.fast["half_weights"] == "cuda":  # the default: measured to pay on GPUs only
            self.fast["half_weights"] = self.device.startswith("cuda")
        self.precision = resolve_precision(precision, self.device)
        # Refused here, before the slow load, when it cannot run on this device and precision.
        self.runtime = onnx_forward.resolve_runtime(runtime, self.device, self.precision)
        loaded = load(model, revision, max_length, allow_pickle, self.device, self.precision, self.runtime, self.fast)
        self.backend = loaded.backend
        self.labels, self.max_length, self.revision = loaded.labels, loaded.max_length, loaded.revision
        self.tokenizer = loaded.tokenizer
        self.columns = [column_name(label) for label in self.labels]
        if len(set(self.columns)) != len(self.columns):
            raise ModelError(f"Checkpoint {model!r} has labels that clash as column names: {self.labels}.")
        budget = batch_tokens or default_batch_tokens(self.device, loaded.config, self.max_length, self.precision, self.runtime)
        self.batcher = Batcher(loaded.tokenizer_json, self.max_length, loaded.truncation_side, loaded.pad_id, budget,
                               self.fast["pad_multiple"], self.fast["prepare_in_encode"], self.fast["equal_lengths"])
        self.long_texts = self.batcher.long_texts(long_texts, chunk_overlap, max_chunks, chunk_aggregation)
        self.ahead = HeadStart(self.batcher.batches, lambda input_ids, lengths: self.backend.run(input_ids, lengths))

    def close(self) -> None:
        """Stop the backend's threads (ONNX Runtime's batch pool); the classifier is not used after this."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    @property
    def model(self) -> Any:
        """The torch model (None with the ONNX Runtime backend)."""
        return getattr(self.backend, "model", None)

    @property
    def batch_tokens(self) -> int:
        return self.batcher.batch_tokens

    @batch_tokens.setter
    def batch_tokens(self, value: int) -> None:
        self.batcher.batch_tokens = value

    def encode(self, texts: list[str]) -> tuple[EncodedIds, np.ndarray]:
        """The rows to run (one per text, or its chunks) and a truncated flag per text (Batcher.encode)."""
        return self.batcher.encode(texts)

    def prediction(self, ids: list[list[int]], truncated: np.ndarray, pending: Pending) -> Prediction:
        """The texts' Prediction from `submit(ids)`'s window (chunk mode: aggregated from their chunks)."""
        return Prediction(*chunks.per_text(self.collect(pending), ids, truncated, self.long_texts.get("aggregation")))

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        """Probabilities for pre-tokenized rows, in the order given: `collect(submit(ids))`."""
        return self.collect(self.submit(ids))

    def submit(self, ids: list[list[int]]) -> Pending:
        """Queue every batch of these rows on the device and return at once (CUDA) or when done.

        Nothing in the forward pass waits for the GPU: its probabilities stay on the device and one
        asynchronous copy brings them back. Batches that `head_start` already ran for these very
        ids are taken from it, not run again.
        """
        if not ids:
            return Pending(0, np.zeros(0, dtype=np.int64), np.empty((0, len(self.labels)), dtype=np.float32))
        ahead = self.ahead.take(ids)
        order, outputs = [], []
        for k, (batch, input_ids, lengths) in enumerate(self.batcher.batches(ids)):
            order.append(batch)
            outputs.append(ahead[k] if k < len(ahead) else self.backend.run(input_ids, lengths))
        return self.backend.pending(len(ids), np.concatenate(order), outputs)

    def collect(self, pending: Pending) -> np.ndarray:
        """The probabilities of a submitted window, back in the rows' order (waits for its copy)."""
        return collect(pending, len(self.labels))

    def head_start(self, ids: list[list[int]], stop: Callable[[], bool]) -> int:
        """Run the batches `submit(ids)` would run, in its order, until `stop()`; the next `submit` of the
        same ids takes them (head_start.py). Returns how many ran."""
        return self.ahead.run(ids, stop)

    def head_start_behind(self, ids_of: Callable[[], list[list[int]]]) -> None:
        """`head_start(ids_of())` in a thread of its own, until the next `submit` (or `end_head_start`) stops it."""
        self.ahead.behind(ids_of)

    def end_head_start(self) -> None:
        """Stop a head start running behind after its batch in flight; keep what it ran."""
        self.ahead.end()

    def __call__(self, texts: list[str]) -> Prediction:
        ids, truncated = self.encode(texts)
        return self.prediction(ids, truncated, self.submit(ids))

    def describe(self) -> dict[str, Any]:
        """What went into the labels: recorded in the manifest and the Parquet metadata."""
        return {
            "model": self.name,
            "revision": self.revision,
            "labels": self.labels,
            "device": self.device,
            "precision": self.precision,
            "runtime": self.runtime,
            "max_length": self.max_length,
            "long_texts": self.long_texts,
            "batch_tokens": self.batch_tokens,
            # Only fast paths that are on, so the exact path's record is unchanged.
            **({"fast_paths": on} if (on := self.fast_paths_on()) else {}),
        }

    def fast_paths_on(self) -> dict[str, Any]:
        """The fast paths that differ from the exact path (see FAST_PATH_DEFAULTS), as set here."""
        on = {k: v for k, v in self.fast.items() if v != EXACT[k]}
        if self.runtime == "onnx":  # the torch-only paths do not run there
            on = {k: v for k, v in on.items() if k in ("prepare_in_encode", "pad_multiple", "equal_lengths")}
        if on.get("half_weights") and self.precision not in ("bf16", "fp16"):
            on.pop("half_weights")  # nothing to cast at fp32 / int8
        return on


# This process's classifiers by settings, and how often each was loaded: a worker loads once.
_CACHE: dict[tuple[tuple[str, Any], ...], EmotionClassifier] = {}
_LOADS: Counter[tuple[tuple[str, Any], ...]] = Counter()
CACHE_SIZE = 2


def cached_classifier(**settings: Any) -> EmotionClassifier:
    """One classifier per process and settings: a worker reuses it for every shard it runs."""
    key = tuple(sorted(settings.items()))
    if key not in _CACHE:
        while len(_CACHE) >= CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE))).close()  # the oldest: a process rarely needs more than one model
        _CACHE[key] = EmotionClassifier(**settings)
        _LOADS[key] += 1
    return _CACHE[key]


def load_count(**settings: Any) -> int:
    """How often this process has loaded the classifier for these settings (1: loaded once, reused)."""
    return _LOADS[tuple(sorted(settings.items()))]


def clear_cache() -> None:
    """Close and forget this process's classifiers (their threads end: a process that must exit calls it)."""
    for clf in _CACHE.values():
        clf.close()
    _CACHE.clear()
    _LOADS.clear()
