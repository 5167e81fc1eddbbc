"""emodraw-batch: label the emotion of every text in large Parquet corpora.

The package is cut by layer, each importing only those before it (tests/test_layers.py):

    errors, config, emotions, dates, text, atomic    the base: settings, errors, one atomic write
    inference/    texts -> probabilities (EmotionClassifier, batcher, forward backends)
    files/        storage, input reading, the output layout and writer, locks
    analysis/     statistics, charts, metrics, evaluation
    job/          validate, plan, label shards, finish, resume
    train/        fine-tuning, training from scratch, distillation

The names in `__all__` are the public API (docs/python-api.md), imported on first use: `import
emodraw_batch` loads neither torch, transformers, polars nor Prefect. Everything else (every
submodule) is internal and may change between versions.

    classify(data, *, model=..., text_column="text", **settings) -> polars.DataFrame   label in memory
    run(inputs, output, *, overwrite=False, on_rows=None, **settings) -> Summary        a whole job, no orchestrator
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from emodraw_batch.version import __version__  # a base module: submodules import it from there, never from here
from emodraw_batch.memory import tune_allocators  # noqa: E402

tune_allocators()  # before pyarrow and polars load: their allocators read these settings once (memory.py)

from emodraw_batch.errors import EmodrawError  # noqa: E402  (light: no torch, no transformers)

_LAZY = {
    "classify": "emodraw_batch.job.api",
    "run": "emodraw_batch.job.api",
    "Summary": "emodraw_batch.job.runner",
    "ClassifySettings": "emodraw_batch.job.api",
    "RunSettings": "emodraw_batch.job.api",
    "EmotionClassifier": "emodraw_batch.inference.classifier",
    "Prediction": "emodraw_batch.inference.classifier",
    "RunConfig": "emodraw_batch.config",
    "polars_options": "emodraw_batch.files.storage",
}

__all__ = [
    "ClassifySettings",
    "EmodrawError",
    "EmotionClassifier",
    "Prediction",
    "RunConfig",
    "RunSettings",
    "Summary",
    "__version__",
    "classify",
    "polars_options",
    "run",
]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from emodraw_batch.config import RunConfig
    from emodraw_batch.files.storage import polars_options
    from emodraw_batch.inference.classifier import EmotionClassifier, Prediction
    from emodraw_batch.job.api import ClassifySettings, RunSettings, classify, run
    from emodraw_batch.job.runner import Summary


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
