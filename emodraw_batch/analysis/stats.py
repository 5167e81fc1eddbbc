"""Aggregate emotion statistics over a finished output, computed lazily by polars.

`DIR/stats/` holds tidy (long) Parquet tables and a `summary.json`:

    overall.parquet      emotion, count, share, mean_score, median_score   (every label, zeros included)
    by_<column>.parquet  <column>, emotion, count, share, mean_score, median_score   (one per --group-by)
    over_time.parquet    bucket, emotion, count, share   (every bucket from first to last, empty ones included)
    status.parquet       status, rows   (`ok`, and why the other rows were not classified)
    languages.parquet    lang, rows, classified   (when the labels have a `lang` column; lang null = unsure or no text)

Shares are over classified rows only (`status == "ok"`); rows with no text are
counted in `status.parquet` and `summary.json`, never in a share. Everything is read with
`pl.scan_parquet` over `DIR/labels`, only the columns a table needs, by polars' streaming engine,
one query at a time; exact medians of (group, emotion) pairs with more than 16,384 rows come from
two counting passes (median.py), not from polars' median, which keeps every score. Nothing loads
the whole output: memory depends on the number of groups and time buckets, not of rows. An output in an object store (s3://...) is read and written
the same way, through its `Layout` (polars gets `storage.polars_options`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from emodraw_batch.errors import ConfigError, InputError, OutputError
from emodraw_batch.atomic import replacing_in
from emodraw_batch.analysis.median import median
from emodraw_batch.files.layout import STATS, STATS_SUMMARY, Layout, layout
from emodraw_batch.files.storage import polars_options
from emodraw_batch.files.writer import METADATA_KEY, written_names
from emodraw_batch.text import OK

if TYPE_CHECKING:
    import polars as pl

    from emodraw_batch.config import RunConfig

# polars duration strings for datetimes (`1h`, `1d`, `1w`, `1mo`, `1d12h`, ...); the integer-index
# unit `i` is left out on purpose because it means nothing for a time column.
_DURATION = re.compile(r"(?:\d+(?:ns|us|ms|s|m|h|d|w|mo|q|y))+")
# Names the by_<column> tables use for their own columns (and the labels' own columns).
_RESERVED = (
    "emotion", "count", "share", "mean_score", "median_score", "emotion_score", "n_chunks", "n_tokens", "truncated",
    "status", "text_lang_score", "text_lang_source",
)


def check_every(every: str) -> str:
    """A positive polars duration string, or a ConfigError that says what is accepted."""
    ok = _DURATION.fullmatch(every or "") and any(int(n) for n in re.findall(r"\d+", every))
    if not ok:
        raise ConfigError(
            f"--every must be a positive polars duration such as 1h, 1d, 1w or 1mo (units ns, us, ms, s, m, h, d, "
            f"w, mo, q, y; combinations like 1d12h work); got {every!r}. Pass for example --every 1d."
        )
    return every


def check_options(
    schema: pa.Schema,
    group_by: Sequence[str] = (),
    time_column: str | None = None,
    every: str = "1d",
    where: str = "the input",
) -> None:
    """Group and time columns must exist in `schema` with usable types; `every` must be a duration.

    The runner calls this on the input schema before the model loads, so a typo
    fails in a second rather than after hours of labelling.
    """
    names = schema.names
    for column in group_by:
        if column in _RESERVED or column.startswith("prob_"):
            raise InputError(
                f"--group-by column {column!r} clashes with a column of the statistics or of the labels "
                f"({', '.join(_RESERVED)}, prob_<label>). Group by an input column; rename it if it has one of these names."
            )
        if column not in names:
            raise InputError(
                f"--group-by column {column!r} is not in {where}; its columns are {names}. "
                "Pass one of them, or leave --group-by out."
            )
        if pa.types.is_nested(schema.field(column).type):
            raise InputError(
                f"--group-by column {column!r} has type {schema.field(column).type}; groups need plain values "
                "(string, number, bool, date). Pass another column."
            )
    if time_column is not None:
        if time_column not in names:
            raise InputError(
                f"--time-column {time_column!r} is not in {where}; its columns are {names}. "
                "Pass one of them, or leave --time-column out."
            )
        kind = schema.field(time_column).type
        if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
            raise InputError(
                f"--time-column {time_column!r} has type {kind}, but time buckets need a timestamp or date column. "
                "Store it as a timestamp in the input (e.g. polars `pl.col(c).str.to_datetime()`), or pass "
                "another column."
            )
        check_every(every)


@dataclass
class Stats:
    """The statistics of one output: small polars DataFrames plus the numbers for summary.json."""

    labels: list[str]
    rows: int
    status: pl.DataFrame
    overall: pl.DataFrame
    groups: dict[str, pl.DataFrame] = field(default_factory=dict)
    over_time: pl.DataFrame | None = None
    time_column: str | None = None
    every: str | None = None
    rows_without_time: int = 0
    languages: pl.DataFrame | None = None

    @property
    def classified(self) -> int:
        return int(self.status.filter(status=OK)["rows"].sum())

    def summary(self) -> dict[str, Any]:
        """The JSON view: totals, the overall table, and where each table is."""
        unclassified = {s: int(n) for s, n in self.status.iter_rows() if s != OK}
        out: dict[str, Any] = {
            "rows": self.rows,
            "classified": self.classified,
            "unclassified": unclassified,
            "labels": self.labels,
            "overall": self.overall.to_dicts(),
            "tables": {"overall": "overall.parquet", "status": "status.parquet"},
            "group_by": {},
            "time": None,
        }
        if self.languages is not None:
            out["tables"]["languages"] = "languages.parquet"
            out["languages"] = {str(lang): int(n) for lang, n, _ in self.languages.head(20).iter_rows()}
        for column, frame in self.groups.items():
            out["group_by"][column] = {"table": table_name(column), "groups": frame[column].n_unique()}
        if self.over_time is not None:
            import polars as pl

            per_bucket = self.over_time.group_by("bucket").agg(pl.col("count").sum())
            out["time"] = {
                "column": self.time_column,
                "every": self.every,
                "table": "over_time.parquet",
                "first": _iso(per_bucket["bucket"].min()),
                "last": _iso(per_bucket["bucket"].max()),
                "buckets": per_bucket.height,
                "empty_buckets": int((per_bucket["count"] == 0).sum()),
                "rows_without_time": self.rows_without_time,
            }
        return out


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def table_name(column: str) -> str:
    """`by_<column>.parquet`, with characters that are unsafe in file names replaced by `_`."""
    return "by_" + re.sub(r"[^\w.-]", "_", column) + ".parquet"


def scan_labels(out_dir: str | Path | Layout) -> pl.LazyFrame:
    """All labelled rows of an output as one LazyFrame (no data read yet); local or in an object store."""
    import polars as pl

    out = layout(out_dir)
    files = out.shard_files()
    if not files:
        raise OutputError(
            f"{out.uri!r} holds no labelled output ({out.show(out.labels)!r} has no .parquet files). "
            "Pass the folder given to `emodraw-batch run --output`, after the run has finished."
        )
    return pl.scan_parquet([out.url(f) for f in files], storage_options=polars_options(out.uri))


def labels_schema(out_dir: str | Path | Layout) -> pa.Schema:
    """The output schema (every file of an output shares it; see writer.output_schema)."""
    out = layout(out_dir)
    return pq.read_schema(out.shard_files()[0], filesystem=out.fs).remove_metadata()


def labels_view(out: Layout) -> tuple[pl.LazyFrame, pa.Schema]:
    """The labels with our columns under their own names (`emotion_score`, `status`, `text_lang`...).

    A file names them as `writer.written_names` says: `emodraw_<name>` beside an input column of the
    same name (that input column is left out here: the statistics are about our columns), and the
    names before issue 38 (`score`, `lang`) in older files. Every file of an output shares one schema.
    """
    first = out.shard_files()[0] if out.shard_files() else None
    frame = scan_labels(out)
    if first is None:
        return frame, pa.schema([])
    schema = pq.read_schema(first, filesystem=out.fs)
    stored = (schema.metadata or {}).get(METADATA_KEY)  # none in files not written by emodraw-batch
    names = {own: written for own, written in written_names(json.loads(stored) if stored else {}).items()
             if written != own and written in schema.names}
    schema = schema.remove_metadata()
    shadowed = [own for own in names if own in schema.names]
    kept = [f for f in schema if f.name not in shadowed]
    schema = pa.schema([f.with_name(next((o for o, w in names.items() if w == f.name), f.name)) for f in kept])
    return frame.drop(shadowed).rename({written: own for own, written in names.items()}), schema


def compute(
    out_dir: str | Path | Layout, group_by: Sequence[str] = (), time_column: str | None = None, every: str = "1d"
) -> Stats:
    """Compute every statistic of `out_dir`: one streaming query per table, then the medians."""
    import polars as pl

    out = layout(out_dir)
    frame, schema = labels_view(out)
    check_options(schema, group_by, time_column, every, where=f"the labels in {out.uri!r}")
    labels = [name.removeprefix("prob_") for name in schema.names if name.startswith("prob_")]
    ok = frame.filter(pl.col("status") == OK)
    scores = [pl.len().cast(pl.Int64).alias("count"), pl.col("emotion_score").cast(pl.Float64).mean().alias("mean_score")]
    queries = {
        "status": frame.group_by("status").agg(pl.len().cast(pl.Int64).alias("rows")),
        "overall": ok.group_by("emotion").agg(scores),
    }
    for column in group_by:
        queries[f"by:{column}"] = ok.group_by(column, "emotion").agg(scores)
    if "text_lang" in schema.names:
        queries["languages"] = (
            frame.group_by(pl.col("text_lang").alias("lang"))
            .agg(pl.len().cast(pl.Int64).alias("rows"), (pl.col("status") == OK).sum().cast(pl.Int64).alias("classified"))
            .sort("rows", "lang", descending=[True, False], nulls_last=True)
        )
    if time_column is not None:
        # Date columns become datetimes so that sub-day buckets (1h) work the same for both.
        when = pl.col(time_column)
        if pa.types.is_date(schema.field(time_column).type):
            when = when.cast(pl.Datetime("us"))
        queries["time"] = ok.filter(pl.col(time_column).is_not_null()).group_by(
            when.dt.truncate(every).alias("bucket"), "emotion"
        ).agg(pl.len().cast(pl.Int64).alias("count"))
        # Classified rows with no time are in the overall and group shares, but in no bucket.
        queries["no_time"] = ok.select(pl.col(time_column).null_count().cast(pl.Int64).alias("n"))

    # One streaming query at a time: collect_all would share the scan, but holds memory that grows with the rows.
    results = {name: query.collect(engine="streaming") for name, query in queries.items()}
    status = results["status"].sort("status")
    overall = (
        pl.DataFrame({"emotion": labels}, schema={"emotion": pl.String})
        .join(_scores(results["overall"], ok, ["emotion"]), on="emotion", how="left")
        .with_columns(pl.col("count").fill_null(0))
        .with_columns(_share(pl.col("count"), pl.col("count").sum()))
        .select("emotion", "count", "share", "mean_score", "median_score")
    )
    stats = Stats(
        labels=labels,
        rows=int(status["rows"].sum()),
        status=status,
        overall=overall,
        groups={c: _group_table(results[f"by:{c}"], ok, c, pl.Enum(labels)) for c in group_by},
        languages=results.get("languages"),
    )
    if time_column is not None:
        stats.over_time = _fill_buckets(results["time"], labels, every)
        stats.time_column, stats.every = time_column, every
        stats.rows_without_time = int(results["no_time"].item())
    return stats


def _scores(table: pl.DataFrame, ok: pl.LazyFrame, keys: list[str]) -> pl.DataFrame:
    """`table` (one row per `keys`, with its `count`) with the exact `median_score` of its rows."""
    return table.join(median(ok, keys, table), on=keys, how="left", nulls_equal=True)


def _group_table(table: pl.DataFrame, ok: pl.LazyFrame, column: str, order: pl.Enum) -> pl.DataFrame:
    """by_<column>: count, share within the group, mean and median score per (group, emotion)."""
    import polars as pl

    return (
        _scores(table, ok, [column, "emotion"])
        .with_columns((pl.col("count") / pl.col("count").sum().over(column)).alias("share"))
        .sort(column, pl.col("emotion").cast(order), nulls_last=True)
        .select(column, "emotion", "count", "share", "mean_score", "median_score")
    )


def _share(count: pl.Expr, total: pl.Expr) -> pl.Expr:
    """count / total, null (not NaN) where there is nothing to share."""
    import polars as pl

    return pl.when(total > 0).then(count / total).otherwise(None).cast(pl.Float64).alias("share")


def _fill_buckets(counts: pl.DataFrame, labels: list[str], every: str) -> pl.DataFrame:
    """Every bucket from the first to the last x every label, zeros where nothing was seen."""
    import polars as pl

    bucket_type = counts.schema["bucket"]
    if counts.is_empty():
        return pl.DataFrame(schema={"bucket": bucket_type, "emotion": pl.String, "count": pl.Int64, "share": pl.Float64})
    seen = counts["bucket"]
    steps = pl.datetime_range(
        seen.min(), seen.max(), every, time_unit=bucket_type.time_unit, time_zone=bucket_type.time_zone, eager=True
    )
    # The union keeps every observed bucket even where calendar steps and truncation could disagree (DST).
    buckets = pl.concat([steps.cast(bucket_type), seen]).unique().sort().to_frame("bucket")
    grid = buckets.join(pl.DataFrame({"emotion": labels}, schema={"emotion": pl.String}), how="cross")
    return (
        grid.join(counts, on=["bucket", "emotion"], how="left")
        .with_columns(pl.col("count").fill_null(0))
        .with_columns(_share(pl.col("count"), pl.col("count").sum().over("bucket")))
        .sort("bucket", pl.col("emotion").cast(pl.Enum(labels)))
    )


def _put(out: Layout, path: str, write: Any) -> None:
    with out.fs.open_output_stream(path) as fh:
        write(fh)


def write(stats: Stats, out_dir: str | Path | Layout) -> dict[str, Any]:
    """Write `out_dir/stats/` (replacing an earlier one as a whole; file by file in an object store)."""
    out = layout(out_dir)
    summary = stats.summary()
    # Swapped in as a whole folder, so tables of an earlier --group-by never linger beside new ones.
    with replacing_in(out.fs, out.stats) as temp:
        out.fs.create_dir(temp)
        _put(out, f"{temp}/status.parquet", stats.status.write_parquet)
        _put(out, f"{temp}/overall.parquet", stats.overall.write_parquet)
        for column, frame in stats.groups.items():
            _put(out, f"{temp}/{table_name(column)}", frame.write_parquet)
        if stats.over_time is not None:
            _put(out, f"{temp}/over_time.parquet", stats.over_time.write_parquet)
        if stats.languages is not None:
            _put(out, f"{temp}/languages.parquet", stats.languages.write_parquet)
        text = json.dumps(summary, indent=2, default=str) + "\n"
        _put(out, f"{temp}/{STATS_SUMMARY}", lambda fh: fh.write(text.encode()))
    return summary


def write_stats(out_dir: str | Path | Layout, config: RunConfig) -> dict[str, Any]:
    """The end of every run: statistics with the run's --group-by / --time-column / --every."""
    stats = compute(out_dir, config.group_by, config.time_column, config.every)
    return write(stats, out_dir)


def read_summary(out_dir: str | Path | Layout) -> dict[str, Any]:
    """`DIR/stats/summary.json` as written by `write`."""
    out = layout(out_dir)
    if not out.is_file(out.stats_summary):
        raise OutputError(
            f"{out.show(out.stats_summary)!r} does not exist. Compute the statistics first with "
            f"`emodraw-batch stats {out.uri}`."
        )
    return out.read_json(out.stats_summary)


def read_table(out_dir: str | Path | Layout, name: str) -> pl.DataFrame:
    """One table of `DIR/stats/` (a name from summary.json)."""
    import polars as pl

    out = layout(out_dir)
    with out.fs.open_input_file(out.join(STATS, name)) as fh:
        return pl.read_parquet(fh)


def run_options(out_dir: str | Path | Layout) -> dict[str, Any]:
    """The run's group_by / time_column / every from `DIR/manifest.json` (defaults when absent)."""
    out = layout(out_dir)
    config = out.read_json(out.manifest).get("config", {}) if out.is_file(out.manifest) else {}
    return {
        "group_by": tuple(config.get("group_by") or ()),
        "time_column": config.get("time_column"),
        "every": config.get("every") or "1d",
    }
