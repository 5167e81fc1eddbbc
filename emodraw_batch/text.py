"""Turn a column of raw texts into model-ready strings and a per-row status.

The passthrough column is never changed; only the copy sent to the model is
cleaned. Rows whose status is not `ok` are never sent to the model.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

OK, NULL, EMPTY, BLANK = "ok", "null", "empty", "blank"
# A text confidently detected in a language outside `--languages` (inference/language.py): kept, not labelled.
LANGUAGE = "language"

# Zero-width characters and the byte-order mark carry no meaning for the model: removed.
_ZERO_WIDTH = ((0x200B, 0x200D), (0x2060, 0x2060), (0xFEFF, 0xFEFF))
# C0/C1 control characters: a space each (tab and newlines are plain whitespace to the tokenizer: kept).
_CONTROL = ((0x00, 0x08), (0x0B, 0x0C), (0x0E, 0x1F), (0x7F, 0x9F))
_CLEAN = str.maketrans(
    {**{c: None for a, b in _ZERO_WIDTH for c in range(a, b + 1)}, **{c: " " for a, b in _CONTROL for c in range(a, b + 1)}}
)
# Finds a text that needs `_CLEAN` (few do): one scan in C, rather than a translation of every text.
_DIRTY = re.compile("[" + "".join(rf"\U{a:08x}-\U{b:08x}" for a, b in (*_ZERO_WIDTH, *_CONTROL)) + "]")


def _as_valid_utf8(column: pa.Array) -> pa.Array:
    """Parquet may hold bytes that are not UTF-8; decode those with U+FFFD instead of crashing."""
    try:
        column.validate(full=True)
        return column
    except pa.ArrowInvalid:
        raw = column.cast(pa.large_binary()).to_pylist()
        fixed = [None if b is None else b.decode("utf-8", errors="replace") for b in raw]
        return pa.array(fixed, type=pa.large_string())


def prepare(column: pa.Array | pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """Return (texts for the model, status per row).

    A null row's text is an empty string; a blank row keeps its cleaned whitespace. Only `ok` rows
    are ever sent to the model.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
    if pa.types.is_string_view(column.type):
        column = column.cast(pa.large_string())
    raw = _as_valid_utf8(column).to_pylist()
    # In Python, not Arrow's regex kernels: two replace_substring_regex calls on 25,000-row windows
    # raised RSS ~60 MiB above reading alone, outside pyarrow's pool: a run's largest transient
    # (docs/performance.md).
    texts = [t.translate(_CLEAN) if t and _DIRTY.search(t) else (t or "") for t in raw]
    # str.isspace (str.strip's whitespace) is Arrow's utf8_trim_whitespace's, code point for code point.
    status = np.array(
        [NULL if r is None else EMPTY if not r else BLANK if t.isspace() or not t else OK for r, t in zip(raw, texts)],
        dtype=object,
    )
    return texts, status
