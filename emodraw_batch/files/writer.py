"""Build the labelled table (the output contract) and stream it into one Parquet file per shard.

No partial file is ever visible: see atomic.py.
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

from emodraw_batch.atomic import replacing_in
from emodraw_batch.errors import InputError
from emodraw_batch.inference.classifier import Prediction
from emodraw_batch.text import OK

ADDED = ("emotion", "score", "n_chunks", "n_tokens", "truncated", "status")
METADATA_KEY = b"emodraw"


def added_fields(prob_columns: list[str]) -> list[pa.Field]:
    """The columns every output file gets after the passthrough columns (the output contract)."""
    return [
        pa.field("emotion", pa.string()),
        pa.field("score", pa.float32()),
        *(pa.field(c, pa.float32()) for c in prob_columns),
        pa.field("n_chunks", pa.int32()),  # windows the model ran (1 unless --long-texts chunk)
        pa.field("n_tokens", pa.int32()),
        pa.field("truncated", pa.bool_()),
        pa.field("status", pa.string()),
    ]


def check_added_columns(names: Iterable[str]) -> None:
    """No input column may take the name of a column the output adds."""
    clash = sorted({c for c in names if c in ADDED or c.startswith("prob_")})
    if clash:
        raise InputError(
            f"Input columns {clash} clash with the output columns emodraw-batch adds "
            f"({', '.join(ADDED)}, prob_<label>). Rename them in the input, or drop them before labelling."
        )


def output_schema(input_schema: pa.Schema, prob_columns: list[str], metadata: dict[str, Any]) -> pa.Schema:
    fields = [*input_schema.remove_metadata(), *added_fields(prob_columns)]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, default=str).encode()})


def read_metadata(path: str | Path, fs: pafs.FileSystem | None = None) -> dict[str, Any]:
    """What `output_schema` stored in a written file: version, model description, settings."""
    return json.loads(pq.read_schema(path, filesystem=fs).metadata[METADATA_KEY])


def label_table(
    table: pa.Table, status: np.ndarray, prediction: Prediction, labels: list[str], schema: pa.Schema
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
    out = table
    for f, col in zip(list(schema)[table.num_columns :], columns):
        out = out.append_column(f, col)
    return out.cast(schema) if out.schema != schema else out


class AtomicParquetWriter:
    """Stream tables into a hidden temporary file that becomes `folder/name` only when complete.

    `folder` is a path inside `fs` (local by default; an object store's bucket/prefix works the same).
    """

    def __init__(self, folder: str | Path, name: str, schema: pa.Schema, fs: pafs.FileSystem | None = None) -> None:
        self.schema = schema
        self.rows = 0
        self.fs = fs or pafs.LocalFileSystem()
        self._target = replacing_in(self.fs, f"{folder}/{name}")
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
            self._writer.close()
            self._sink.close()  # an object store's upload completes here, under the temporary key
        except BaseException as error:
            if exc_type is None:
                exc_type, exc, tb = type(error), error, error.__traceback__
            self._target.__exit__(exc_type, exc, tb)  # removes the temporary file
            raise
        self._target.__exit__(exc_type, exc, tb)
