"""Build the labelled table (the output contract) and stream it into one Parquet file per shard.

Every input column is kept as it is; no input column is ever refused for its name. The added
columns have names that common exports of tweets, toots and reviews do not use (`output_names`);
where an input column has one anyway, ours is written as `emodraw_<name>` and the file's metadata
records it (`written_names`; statistics read through it). No partial file is ever visible: see atomic.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from emodraw_batch.atomic import Check, replacing_in
from emodraw_batch.inference.classifier import Prediction
from emodraw_batch.inference.language import Rows
from emodraw_batch.text import OK

ADDED = ("emotion", "emotion_score", "n_chunks", "n_tokens", "truncated", "status")
# Added after `status` only when languages are detected (any setting but --languages any).
LANGUAGE_ADDED = ("text_lang", "text_lang_score", "text_lang_source")
METADATA_KEY = b"emodraw"
COUNTS_KEY = "emodraw_counts"  # counts known only once a file is written (AtomicParquetWriter.counts)
# The naming of the added columns, in the resume fingerprint. 2 (issue 38): `score`, `lang` and `lang_score`
# became `emotion_score`, `text_lang` and `text_lang_score`, because X exports have `lang` and Reddit's
# have `score`; an input column that still shares a name with one is kept and ours is written beside it.
OUTPUT_COLUMNS = 2
# Files written with OUTPUT_COLUMNS 1 (no "columns" in their metadata): where each column was.
_BEFORE = {"emotion_score": "score", "text_lang": "lang", "text_lang_score": "lang_score"}
# What an added column is called where the input already has a column of its name.
PREFIX = "emodraw_"


def added_names(prob_columns: list[str], languages: bool = False) -> list[str]:
    """The added columns' own names, in order: the output contract."""
    return ["emotion", "emotion_score", *prob_columns, *ADDED[2:], *(LANGUAGE_ADDED if languages else ())]


def output_names(input_names: Iterable[str], prob_columns: list[str], languages: bool = False) -> dict[str, str]:
    """Each added column's name -> the name it is written under: its own, or `emodraw_<name>` where
    the input already has a column of that name (the input's column is kept as it is, never refused)."""
    taken = set(input_names)
    names = {}
    for name in added_names(prob_columns, languages):
        written = name
        while written in taken:
            written = PREFIX + written
        taken.add(written)
        names[name] = written
    return names


def written_names(metadata: dict[str, Any]) -> dict[str, str]:
    """An output file's added columns: own name -> name in the file (from its metadata; older files: `_BEFORE`)."""
    return dict(metadata["columns"]) if "columns" in metadata else dict(_BEFORE)


_TYPES = {
    "emotion": pa.string(), "emotion_score": pa.float32(),
    "n_chunks": pa.int32(),  # windows the model ran (1 unless --long-texts chunk)
    "n_tokens": pa.int32(), "truncated": pa.bool_(), "status": pa.string(),
    "text_lang": pa.string(), "text_lang_score": pa.float32(), "text_lang_source": pa.string(),
}


def added_fields(prob_columns: list[str], languages: bool = False, names: dict[str, str] | None = None) -> list[pa.Field]:
    """The columns every output file gets after the passthrough columns (the output contract), under
    `names` (`output_names`; by default their own names)."""
    names = names or {}
    return [pa.field(names.get(n, n), _TYPES.get(n, pa.float32())) for n in added_names(prob_columns, languages)]


def output_schema(
    input_schema: pa.Schema, prob_columns: list[str], metadata: dict[str, Any], languages: bool = False
) -> pa.Schema:
    """The input's columns unchanged, then the added ones; the metadata records the names they got."""
    names = output_names(input_schema.names, prob_columns, languages)
    fields = [*input_schema.remove_metadata(), *added_fields(prob_columns, languages, names)]
    stored = {**metadata, "output_columns": OUTPUT_COLUMNS, "columns": names}
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(stored, default=str).encode()})


def read_metadata(path: str | Path, fs: pafs.FileSystem | None = None) -> dict[str, Any]:
    """What `output_schema` stored in a written file: version, model description, settings."""
    return json.loads(pq.read_schema(path, filesystem=fs).metadata[METADATA_KEY])


def label_table(
    table: pa.Table,
    status: np.ndarray,
    prediction: Prediction,
    labels: list[str],
    schema: pa.Schema,
    languages: Rows | None = None,
) -> pa.Table:
    """Input columns unchanged, plus the label columns. `prediction` covers only the `ok` rows."""
    n = table.num_rows
    ok = status == OK
    probs = np.full((n, len(labels)), np.nan, dtype=np.float32)
    probs[ok] = prediction.probs
    n_tokens = np.zeros(n, dtype=np.int32)
    n_tokens[ok] = prediction.n_tokens
    n_chunks = np.zeros(n, dtype=np.int32)
    n_chunks[ok] = 1 if prediction.n_chunks is None else prediction.n_chunks
    truncated = np.zeros(n, dtype=bool)
    truncated[ok] = prediction.truncated
    top = probs[ok].argmax(axis=1) if ok.any() else np.zeros(0, dtype=np.int64)
    emotion = np.full(n, None, dtype=object)
    emotion[ok] = np.asarray(labels, dtype=object)[top]
    score = np.full(n, np.nan, dtype=np.float32)
    score[ok] = probs[ok][np.arange(len(top)), top]
    null = ~ok
    columns = [
        pa.array(emotion, pa.string()),
        pa.array(score, pa.float32(), mask=null),
        *(pa.array(probs[:, j], pa.float32(), mask=null) for j in range(len(labels))),
        pa.array(n_chunks, pa.int32()),
        pa.array(n_tokens, pa.int32()),
        pa.array(truncated, pa.bool_()),
        pa.array(status.astype(str), pa.string()),
    ]
    if languages is not None:
        lang, lang_score, source = languages
        columns += [
            pa.array(lang, pa.string()),
            pa.array(lang_score, pa.float32(), from_pandas=True),  # NaN (the input decided, no text) -> null
            pa.array(source, pa.string()),
        ]
    out = table
    for f, col in zip(list(schema)[table.num_columns :], columns):
        out = out.append_column(f, col)
    return out.cast(schema) if out.schema != schema else out


def read_counts(path: str | Path, fs: pafs.FileSystem | None = None) -> dict[str, int]:
    """The counts a writer stored in a file's footer (`AtomicParquetWriter.counts`); {} for files without."""
    stored = (pq.read_metadata(path, filesystem=fs).metadata or {}).get(COUNTS_KEY.encode())
    return json.loads(stored) if stored else {}


class AtomicParquetWriter:
    """Stream tables into a hidden temporary file that becomes `folder/name` only when complete.

    `folder` is a path inside `fs` (local by default; an object store's bucket/prefix works the same).
    `counts` set before the end are stored in the file's footer (`read_counts`).
    `check()` runs when the file is complete, just before its final move (files/guard.py).
    """

    def __init__(
        self, folder: str | Path, name: str, schema: pa.Schema, fs: pafs.FileSystem | None = None, check: Check | None = None
    ) -> None:
        self.schema = schema
        self.rows = 0
        self.counts: dict[str, int] = {}
        self.fs = fs or pafs.LocalFileSystem()
        self._target = replacing_in(self.fs, f"{folder}/{name}", check)
        self.temp = self._target.__enter__()
        try:
            self._sink = self.fs.open_output_stream(self.temp)
            self._writer = pq.ParquetWriter(self._sink, schema, compression="zstd")
        except BaseException as exc:
            self._target.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows

    def __enter__(self) -> AtomicParquetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self.counts and exc_type is None:
                self._writer.add_key_value_metadata({COUNTS_KEY: json.dumps(self.counts)})
            self._writer.close()
            self._sink.close()  # an object store's upload completes here, under the temporary key
        except BaseException as error:
            if exc_type is None:
                exc_type, exc, tb = type(error), error, error.__traceback__
            self._target.__exit__(exc_type, exc, tb)  # removes the temporary file
            raise
        self._target.__exit__(exc_type, exc, tb)
