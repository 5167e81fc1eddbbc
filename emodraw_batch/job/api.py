"""The Python API: `classify` a DataFrame in memory, `run` a whole job from any orchestrator.

Both are the run's own code, not a second path: `classify` cleans the texts (`text.prepare`),
batches them by sorted length under the token budget and labels them with the process's cached
classifier in `runner.label_windows`, the loop every shard runs, and builds its columns with the
writer's `label_table`; `run` is `runner.run` (validate, plan, label, finish; resume and lock).
Settings are `RunConfig`'s field names; a misspelt one is an error naming the valid ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import pyarrow as pa

from emodraw_batch.config import DEFAULT_MODEL, Precision, RunConfig, build
from emodraw_batch.errors import ConfigError, InputError
from emodraw_batch.files.reader import KEYWORDS, check_columns, check_language_column, check_language_column_found
from emodraw_batch.files.writer import output_schema
from emodraw_batch.job import runner
from emodraw_batch.job.runner import OnRows, Summary
from emodraw_batch.job.validate import check_model

if TYPE_CHECKING:
    import polars as pl
    from typing_extensions import Unpack


class ClassifySettings(TypedDict, total=False):
    """The settings `classify` takes besides `model` and `text_column` (RunConfig's fields of the same names)."""

    revision: str | None
    device: str
    precision: Precision
    runtime: Literal["auto", "torch", "onnx"]
    max_length: int
    batch_tokens: int | None
    window_rows: int
    allow_pickle: bool
    cast_text: bool
    dedup: bool
    dedup_texts: int
    languages: str
    language_column: str | None
    language_skip_below: float
    language_confidence: float
    language_workers: int | None
    long_texts: Literal["truncate", "chunk"]
    chunk_overlap: int | None
    max_chunks: int
    chunk_aggregation: Literal["weighted", "mean", "max"]


class RunSettings(ClassifySettings, total=False):
    """The settings `run` takes: every field of RunConfig (tests/test_api.py keeps the two in step)."""

    model: str
    text_column: str
    id_column: str | None
    shard_rows: int
    skip_bad_files: bool
    group_by: tuple[str, ...]
    time_column: str | None
    every: str


def config_from(caller: str, valid: Iterable[str], values: dict[str, Any]) -> RunConfig:
    """A RunConfig from keyword settings, or one ConfigError: unknown names (with the valid ones), bad values."""
    valid = list(valid)
    unknown = [name for name in values if name not in valid]
    if unknown:
        hints = [f"{name!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(name, valid, 1)) else "")
                 for name in unknown]
        raise ConfigError(
            f"{caller} got unknown setting(s) {', '.join(hints)}. Its settings are: {', '.join(valid)} "
            "(the fields of emodraw_batch.RunConfig). Fix or remove the unknown names."
        )
    return build(RunConfig, values, caller, valid)


def as_table(data: Any, text_column: str) -> pa.Table:
    """`classify`'s input as an Arrow table: a list of texts or a Series becomes the column `text_column`.

    polars DataFrames (and LazyFrames, collected), pyarrow tables and record batches are taken as
    they are, a dict of columns as polars takes it; a pandas DataFrame or Series goes through
    polars' own conversion (`pl.from_pandas`; pandas is not a dependency).
    """
    import polars as pl

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if type(data).__module__.split(".")[0] == "pandas":
        data = pl.from_pandas(data)
    if isinstance(data, Mapping):  # {"text": [...], "id": [...]}: columns by name
        data = pl.DataFrame(dict(data))
    if isinstance(data, pl.LazyFrame):
        data = data.collect()
    if isinstance(data, pl.Series):
        data = data.to_frame(text_column)
    if isinstance(data, pl.DataFrame):
        return data.to_arrow()
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise InputError(
            f"classify() takes a list of texts, a polars Series or DataFrame (or a pandas DataFrame or a pyarrow "
            f"Table); got {type(data).__name__}. Pass a list, e.g. classify([text])."
        )
    texts = list(data)
    bad = next((i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)), None)
    if bad is not None:
        raise InputError(
            f"classify() got a list whose item {bad} is {type(texts[bad]).__name__} ({texts[bad]!r}), not a text. "
            "Pass strings (None for a missing text), or a polars Series with cast_text=True to cast other types."
        )
    return pa.table({text_column: pa.array(texts, pa.string())})


def classify(
    data: Sequence[str | None] | pl.Series | pl.DataFrame | pa.Table | Any,
    *,
    model: str = DEFAULT_MODEL,
    text_column: str = "text",
    **settings: Unpack[ClassifySettings],
) -> pl.DataFrame:
    """Label the emotion of every text in `data`, in memory: the run's output columns, as a polars DataFrame.

    `data` is a list of texts (None for a missing one), a polars Series (both become the column
    `text_column`), a polars DataFrame, or a pandas DataFrame or pyarrow Table (through polars'
    conversion). The result has every input column unchanged and in order, then `emotion`,
    `emotion_score`, `prob_<label>` (one per label), `n_chunks`, `n_tokens`, `truncated` and `status` (`ok`,
    `null`, `empty`, `blank`, `language`), and with languages (all but `languages="any"`) `text_lang`,
    `text_lang_score` and `text_lang_source`; one row per input row in the input's order: what
    `emodraw-batch run` writes for the same rows. An input column that has one of those names is kept
    and ours is named `emodraw_<name>` (docs/run.md, the output contract). `model` is a hub id or a local checkpoint folder, loaded once per
    process and settings and then reused; `settings` are RunConfig's model settings (device,
    precision, runtime, max_length, long_texts, chunk_overlap, max_chunks, chunk_aggregation, batch_tokens,
    window_rows, revision, allow_pickle, cast_text, dedup: a text repeated in `data` is run once, its copies
    get its result, dedup_texts: how many distinct texts it remembers for that).
    Bad input raises the run's errors (`InputError`, `ConfigError`, `ModelError`: EmodrawError).
    """
    import polars as pl

    config = config_from("emodraw_batch.classify()", ["model", "text_column", *ClassifySettings.__annotations__],
                      {"model": model, "text_column": text_column, **settings})
    table = as_table(data, config.text_column)
    check_columns("The data", table.schema, config.text_column, None, config.cast_text, KEYWORDS)
    if config.detects_languages:
        check_language_column("The data", table.schema, config.language_column, KEYWORDS)
        check_language_column_found(["the data"], [table.column_names], config.language_column, KEYWORDS)
    check_model(config)  # a device, precision or runtime that cannot run here: refused before the load
    clf = runner.classifier_for(config)
    schema = output_schema(table.schema, clf.columns, runner.label_metadata(config, clf), config.detects_languages)
    windows = (table.slice(start, config.window_rows) for start in range(0, table.num_rows, config.window_rows))
    parts: list[pa.Table] = []
    runner.label_windows(windows, config, clf, schema, parts.append)
    labelled = pa.concat_tables(parts) if parts else schema.empty_table()
    return pl.from_arrow(labelled.replace_schema_metadata(None))  # type: ignore[return-value]


def run(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    overwrite: bool = False,
    on_rows: OnRows | None = None,
    **settings: Unpack[RunSettings],
) -> Summary:
    """Label every text in `inputs` into the folder `output`: `emodraw-batch run` in this process, without Prefect.

    `inputs` is a Parquet file, folder or glob (local or s3://, gs://...), or a list of them;
    `output` a local folder or an object store prefix. The same steps as the command line with its
    local engine: validate everything first, plan (resume the shards an earlier run of the same
    job finished), label each shard, write the manifest and statistics; one writer per output
    folder (a second run is refused at once). `overwrite=True` deletes an earlier output first.
    `on_rows(n)` is called as rows are labelled (a progress bar). `settings` are the fields of
    RunConfig (model, text_column, device, shard_rows, ...); an unknown name is a ConfigError.
    Returns the Summary (rows, seconds, rows_per_s, emotions, shares, status, output_files...).
    """
    specs = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(p) for p in inputs]
    config = config_from("emodraw_batch.run()", RunConfig.model_fields, dict(settings))
    return runner.run(specs, output, config, overwrite, on_rows)
