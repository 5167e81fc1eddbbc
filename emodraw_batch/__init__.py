"""emodraw-batch: label the emotion of every text in large Parquet corpora."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import EmodrawError  # noqa: E402  (light: no torch, no transformers)

__all__ = ["EmodrawError", "__version__"]
