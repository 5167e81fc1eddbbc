"""emodraw-batch: label the emotion of every text in large Parquet corpora.

The package is cut by layer, each importing only those before it (tests/test_layers.py):

    errors, config, emotions, dates, text, atomic    the base: settings, errors, one atomic write
    inference/    texts -> probabilities (EmotionClassifier, batcher, forward backends)
    files/        storage, input reading, the output layout and writer, locks
    analysis/     statistics, charts, metrics, evaluation
    job/          validate, plan, label shards, finish, resume
    train/        fine-tuning, training from scratch, distillation

The names below are the public API, imported on first use (no torch at `import emodraw_batch`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from emodraw_batch.errors import EmodrawError  # noqa: E402  (light: no torch, no transformers)

_LAZY = {
    "EmotionClassifier": "emodraw_batch.inference.classifier",
    "Prediction": "emodraw_batch.inference.classifier",
    "RunConfig": "emodraw_batch.config",
    "polars_options": "emodraw_batch.files.storage",
}

__all__ = ["EmodrawError", "EmotionClassifier", "Prediction", "RunConfig", "__version__", "polars_options"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
