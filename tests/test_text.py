"""text.prepare: what the model receives and each row's status, character by character."""

from __future__ import annotations

import pyarrow as pa
import pytest

from emodraw_batch.text import BLANK, EMPTY, NULL, OK, prepare

ROWS = [
    ("hello", "hello", OK),
    (None, "", NULL),
    ("", "", EMPTY),
    ("   \t\n", "   \t\n", BLANK),
    ("\u200b\u200c\u200d\u2060\ufeff", "", BLANK),  # only zero-width characters: nothing left
    ("\x00\x07\x1f\x7f\x85\x9f", "      ", BLANK),  # C0/C1 controls: one space each
    ("\u00a0\u2028\u3000", "\u00a0\u2028\u3000", BLANK),  # Unicode whitespace (Arrow's utf8_trim_whitespace's)
    ("a\u200bb\x01c", "ab c", OK),
    ("tab\tand\r\nnewlines", "tab\tand\r\nnewlines", OK),  # kept: plain whitespace to the tokenizer
    ("\u200e\u180e", "\u200e\u180e", OK),  # format characters that are neither: kept, and not blank
    ("café 😀", "café 😀", OK),
]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.string_view()])
def test_prepare_cleans_and_classifies_every_row(kind) -> None:
    column = pa.array([raw for raw, _, _ in ROWS], kind)
    texts, status = prepare(column)
    assert texts == [text for _, text, _ in ROWS]
    assert status.tolist() == [s for _, _, s in ROWS]


def test_prepare_chunked_and_empty_columns() -> None:
    raw = [r for r, _, _ in ROWS]
    chunked = pa.chunked_array([pa.array(raw[:4]), pa.array(raw[4:])])
    assert prepare(chunked)[0] == [text for _, text, _ in ROWS]
    texts, status = prepare(pa.chunked_array([], pa.string()))
    assert texts == [] and status.tolist() == []


def test_prepare_replaces_invalid_utf8() -> None:
    column = pa.array([b"ok", b"bad \xff", None], pa.binary()).view(pa.string())
    texts, status = prepare(column)
    assert texts == ["ok", "bad \ufffd", ""]
    assert status.tolist() == [OK, OK, NULL]
