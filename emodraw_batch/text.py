"""Turn a column of raw texts into model-ready strings and a per-row status.

The passthrough column is never changed; only the copy sent to the model is
cleaned. Rows whose status is not `ok` are never sent to the model.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OK, NULL, EMPTY, BLANK = "ok", "null", "empty", "blank"
# A text confidently detected in a language outside `--languages` (inference/language.py): kept, not labelled.
LANGUAGE = "language"

# Zero-width characters and the byte-order mark carry no meaning for the model.
_ZERO_WIDTH = r"[\x{200B}-\x{200D}\x{2060}\x{FEFF}]"
# C0/C1 control characters (tab and newlines are plain whitespace to the tokenizer).
_CONTROL = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]"


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

    Texts of rows that are not `ok` are empty strings (never sent to the model).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
    if pa.types.is_string_view(column.type):
        column = column.cast(pa.large_string())
    column = _as_valid_utf8(column)
    cleaned = pc.replace_substring_regex(column, _ZERO_WIDTH, "")
    cleaned = pc.replace_substring_regex(cleaned, _CONTROL, " ")
    n = len(column)
    status = np.full(n, OK, dtype=object)
    is_null = pc.is_null(column).to_numpy(zero_copy_only=False)
    is_empty = pc.equal(pc.utf8_length(column), 0).fill_null(False).to_numpy(zero_copy_only=False)
    is_blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(cleaned)), 0).fill_null(False)
    is_blank = is_blank.to_numpy(zero_copy_only=False)
    status[is_blank] = BLANK
    status[is_empty] = EMPTY
    status[is_null] = NULL
    texts = cleaned.fill_null("").to_pylist()
    return texts, status
