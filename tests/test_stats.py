"""Statistics (emodraw_batch.analysis.stats) against a straightforward recomputation from hand-made labels."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from emodraw_batch.analysis import median, stats
from emodraw_cli.app import app
from emodraw_batch.config import load_config
from emodraw_batch.errors import ConfigError, InputError
from emodraw_batch.job.validate import validate
from emodraw_batch.files.writer import added_fields

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
START = datetime(2026, 11, 1, tzinfo=timezone.utc)
EMPTY_DAYS = (3, 4)  # no classified row on these days: their buckets must still be listed, empty


def _rows() -> list[dict]:
    """Hand-made labelled rows: groups of every size, empty days, unclassified rows, a null time."""
    rng = random.Random(7)
    rows = []
    for _ in range(60):
        day = rng.choice([d for d in range(8) if d not in EMPTY_DAYS])
        rows.append(
            {
                "emotion": rng.choice(LABELS[:5]),  # 'surprise' never occurs: a label with count 0
                "emotion_score": round(rng.uniform(0.2, 1.0), 3),
                "status": "ok",
                "source": rng.choice(["twitter", "review"]),
                "product_id": rng.choice([None, "B01", "B02"]),
                "created_at": START + timedelta(days=day, hours=rng.randint(0, 23)),
            }
        )
    keys = ("emotion", "emotion_score", "status", "source", "product_id", "created_at")
    rows += [
        dict(zip(keys, values))
        for values in [
            # the single-row group
            ("joy", 0.9, "ok", "forum", "B03", START + timedelta(days=1, hours=5)),
            # classified, but no time: in the overall and group shares, in no bucket
            ("anger", 0.6, "ok", "twitter", None, None),
            # not classified: counted apart; the unclassified row on an empty day must not fill its
            # bucket, and 'mail' (only unclassified rows) must not become a group
            (None, None, "empty", "mail", "B01", START + timedelta(days=3, hours=2)),
            (None, None, "blank", "review", "B02", START + timedelta(days=2)),
            # after the last classified row: must not extend the time range
            (None, None, "null", "twitter", None, START + timedelta(days=9)),
        ]
    ]
    rng.shuffle(rows)
    return rows


def _table(rows: list[dict], start_id: int) -> pa.Table:
    """Rows in the output contract's shape (writer.added_fields after the passthrough columns)."""
    probs = {label: [] for label in LABELS}
    for r in rows:
        for label in LABELS:
            p = None if r["emotion_score"] is None else (r["emotion_score"] if label == r["emotion"] else (1 - r["emotion_score"]) / 5)
            probs[label].append(p)
    columns = {
        "id": pa.array(range(start_id, start_id + len(rows)), pa.int64()),
        "text": pa.array(["some text" if r["status"] == "ok" else "" for r in rows], pa.string()),
        "created_at": pa.array([r["created_at"] for r in rows], pa.timestamp("us", tz="UTC")),
        "source": pa.array([r["source"] for r in rows], pa.string()),
        "product_id": pa.array([r["product_id"] for r in rows], pa.string()),
        "emotion": pa.array([r["emotion"] for r in rows], pa.string()),
        "emotion_score": pa.array([r["emotion_score"] for r in rows], pa.float32()),
        **{f"prob_{label}": pa.array(probs[label], pa.float32()) for label in LABELS},
        "n_chunks": pa.array([1] * len(rows), pa.int32()),
        "n_tokens": pa.array([3] * len(rows), pa.int32()),
        "truncated": pa.array([False] * len(rows), pa.bool_()),
        "status": pa.array([r["status"] for r in rows], pa.string()),
    }
    table = pa.table(columns)
    expected_added = [f.name for f in added_fields([f"prob_{label}" for label in LABELS])]
    assert table.column_names[5:] == expected_added  # the fixture follows the real contract
    return table


def write_output(folder: Path, rows: list[dict], options: dict | None = None) -> Path:
    """A finished output in three shards (one of them empty) plus a manifest with the run's options."""
    labels = folder / "labels"
    labels.mkdir(parents=True)
    cuts = [0, 25, 25, len(rows)]
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        pq.write_table(_table(rows[a:b], a), labels / f"part-{i:05d}-00000.parquet")
    config = {"group_by": [], "time_column": None, "every": "1d", **(options or {})}
    (folder / "manifest.json").write_text(json.dumps({"config": config}))
    return folder


@pytest.fixture
def output(tmp_path: Path) -> Path:
    return write_output(tmp_path / "out", _rows())


def _records(frame: pl.DataFrame) -> list[dict]:
    return sorted(frame.to_dicts(), key=lambda r: tuple(str(v) for v in r.values()))


def _expected_table(ok: pl.DataFrame, key: str | None) -> list[dict]:
    """Count, share, mean and median score per (group, emotion), by looping over the partitions."""
    parts = ok.partition_by(key, as_dict=True) if key else {(): ok}
    expected = []
    for group, part in parts.items():
        for label in LABELS:
            sub = part.filter(pl.col("emotion") == label)
            if key and sub.is_empty():
                continue  # group tables list only the (group, emotion) pairs that occur
            scores = sub["emotion_score"].cast(pl.Float64)
            row = {key: group[0]} if key else {}
            row.update(
                emotion=label,
                count=sub.height,
                share=sub.height / part.height,
                mean_score=scores.mean(),
                median_score=scores.median(),
            )
            expected.append(row)
    return expected


def _close(got: list[dict], want: list[dict]) -> bool:
    """Records equal, floats to 1e-9 (a mean may sum in another order), everything else exactly."""
    def same(a: object, b: object) -> bool:
        return math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) and isinstance(b, float) else a == b

    return len(got) == len(want) and all(
        g.keys() == w.keys() and all(same(g[k], w[k]) for k in g) for g, w in zip(got, want)
    )


def _assert_same(got: pl.DataFrame, expected: list[dict]) -> None:
    want = sorted(expected, key=lambda r: tuple(str(v) for v in r.values()))
    assert _close(_records(got), want), (_records(got), want)


def test_statistics_equal_a_straightforward_recomputation(output: Path) -> None:
    result = stats.compute(output, group_by=("source", "product_id"), time_column="created_at", every="1d")
    labelled = pl.read_parquet(output / "labels")
    ok = labelled.filter(pl.col("status") == "ok")

    assert result.labels == LABELS
    _assert_same(result.overall, _expected_table(ok, None))
    assert result.overall["emotion"].to_list() == LABELS  # every label, in the checkpoint's order
    assert result.overall.filter(emotion="surprise").row(0, named=True) == {
        "emotion": "surprise", "count": 0, "share": 0.0, "mean_score": None, "median_score": None
    }
    for column in ("source", "product_id"):
        _assert_same(result.groups[column], _expected_table(ok, column))

    # Time buckets: every day from the first to the last, empty ones with count 0 and share null.
    timed = [r for r in _rows() if r["status"] == "ok" and r["created_at"] is not None]
    days = sorted({r["created_at"].replace(hour=0, minute=0) for r in timed})
    expected = []
    day = days[0]
    while day <= days[-1]:
        in_day = [r for r in timed if r["created_at"].replace(hour=0, minute=0) == day]
        for label in LABELS:
            n = sum(r["emotion"] == label for r in in_day)
            expected.append({"bucket": day, "emotion": label, "count": n, "share": n / len(in_day) if in_day else None})
        day += timedelta(days=1)
    _assert_same(result.over_time, expected)
    assert result.rows_without_time == 1


def test_empty_buckets_single_row_group_and_unclassified_rows(output: Path) -> None:
    result = stats.compute(output, group_by=("source",), time_column="created_at", every="1d")
    summary = result.summary()

    empty = result.over_time.filter(pl.col("bucket").dt.day().is_in([1 + d for d in EMPTY_DAYS]))
    assert empty.height == 2 * len(LABELS)
    assert empty["count"].to_list() == [0] * empty.height and empty["share"].null_count() == empty.height
    assert summary["time"]["empty_buckets"] == len(EMPTY_DAYS)
    assert summary["time"]["buckets"] == 8

    forum = result.groups["source"].filter(source="forum")
    assert forum.select("source", "emotion", "count", "share").rows() == [("forum", "joy", 1, 1.0)]
    assert forum["mean_score"].item() == forum["median_score"].item() == pytest.approx(0.9)
    assert "mail" not in result.groups["source"]["source"].to_list()  # only unclassified rows: no group

    rows = _rows()
    assert summary["rows"] == len(rows)
    assert summary["unclassified"] == {"blank": 1, "empty": 1, "null": 1}
    assert summary["classified"] == sum(r["status"] == "ok" for r in rows) == result.overall["count"].sum()
    # Shares add up to one overall, per group and per non-empty bucket.
    assert result.overall["share"].sum() == pytest.approx(1.0)
    per_group = result.groups["source"].group_by("source").agg(pl.col("share").sum())
    assert per_group["share"].to_list() == pytest.approx([1.0] * per_group.height)
    per_bucket = result.over_time.group_by("bucket").agg(pl.col("share").sum(), pl.col("count").sum()).filter(pl.col("count") > 0)
    assert per_bucket["share"].to_list() == pytest.approx([1.0] * per_bucket.height)


@pytest.mark.parametrize(
    ("every", "floor", "step"),
    [
        ("12h", lambda t: t.replace(hour=t.hour // 12 * 12, minute=0), timedelta(hours=12)),
        ("1w", lambda t: t.replace(hour=0, minute=0) - timedelta(days=t.weekday()), timedelta(weeks=1)),
    ],
)
def test_bucket_sizes(output: Path, every: str, floor, step: timedelta) -> None:
    result = stats.compute(output, time_column="created_at", every=every)
    timed = [r for r in _rows() if r["status"] == "ok" and r["created_at"] is not None]
    first, last = min(floor(r["created_at"]) for r in timed), max(floor(r["created_at"]) for r in timed)
    buckets = result.over_time["bucket"].unique().sort().to_list()
    assert buckets == [first + i * step for i in range(int((last - first) / step) + 1)]
    for bucket in buckets:
        got = dict(result.over_time.filter(bucket=bucket).select("emotion", "count").iter_rows())
        assert got == {label: sum(floor(r["created_at"]) == bucket and r["emotion"] == label for r in timed) for label in LABELS}


def test_date_column_buckets_as_midnight_timestamps(tmp_path: Path) -> None:
    rows = _rows()
    out = write_output(tmp_path / "out", rows)
    for path in (out / "labels").glob("*.parquet"):
        table = pq.read_table(path)
        i = table.schema.get_field_index("created_at")
        pq.write_table(table.set_column(i, "created_at", table["created_at"].cast(pa.date32())), path)
    result = stats.compute(out, time_column="created_at", every="1d")
    by_day = result.over_time.group_by("bucket").agg(pl.col("count").sum()).sort("bucket")
    assert by_day["bucket"].dtype == pl.Datetime("us")
    timed = [r["created_at"].date() for r in rows if r["status"] == "ok" and r["created_at"] is not None]
    assert {b.date(): n for b, n in by_day.iter_rows() if n} == {d: timed.count(d) for d in set(timed)}


def test_write_replaces_the_folder_and_tables_read_back(output: Path) -> None:
    first = stats.write(stats.compute(output, group_by=("source", "product_id"), time_column="created_at"), output)
    folder = output / "stats"
    assert {p.name for p in folder.iterdir()} == {
        "summary.json", "overall.parquet", "status.parquet", "by_source.parquet", "by_product_id.parquet", "over_time.parquet"
    }
    assert json.loads((folder / "summary.json").read_text()) == json.loads(json.dumps(first, default=str))
    assert pl.read_parquet(folder / "overall.parquet").to_dicts() == first["overall"]
    assert pl.read_parquet(folder / "status.parquet").schema == pl.Schema({"status": pl.String, "rows": pl.Int64})

    second = stats.write(stats.compute(output, group_by=("source",)), output)
    assert {p.name for p in folder.iterdir()} == {"summary.json", "overall.parquet", "status.parquet", "by_source.parquet"}
    assert second["time"] is None and list(second["group_by"]) == ["source"]
    assert not list(output.glob(".stats*"))  # no temporary folder left behind


@pytest.mark.parametrize("every", ["1h", "1d", "1w", "1mo", "1d12h", "90m"])
def test_valid_durations(every: str) -> None:
    assert stats.check_every(every) == every


@pytest.mark.parametrize("every", ["", "1x", "0d", "-1d", "1i", "2 d", "1D", "day"])
def test_invalid_durations(every: str) -> None:
    with pytest.raises(ConfigError, match=r"--every must be a positive polars duration.*got"):
        stats.check_every(every)


def test_options_are_checked_against_the_schema() -> None:
    schema = pa.schema(
        [("text", pa.string()), ("source", pa.string()), ("when", pa.timestamp("ms")), ("tags", pa.list_(pa.string()))]
    )
    stats.check_options(schema, ("source",), "when", "1d")
    with pytest.raises(InputError, match=r"--group-by column 'sorce' is not in the input; its columns are \['text', 'source'"):
        stats.check_options(schema, ("sorce",))
    with pytest.raises(InputError, match=r"'tags' has type list<item: string>"):
        stats.check_options(schema, ("tags",))
    with pytest.raises(InputError, match=r"--time-column 'source' has type string, but time buckets need a timestamp"):
        stats.check_options(schema, (), "source")
    with pytest.raises(ConfigError):
        stats.check_options(schema, (), "when", "1x")
    for clash in ("emotion", "count", "prob_joy"):  # would collide with the table's own columns
        with pytest.raises(InputError, match=f"--group-by column '{clash}' clashes"):
            stats.check_options(schema.append(pa.field(clash, pa.string())), (clash,))


def test_plan_rejects_bad_options_before_the_model_loads(tmp_path: Path) -> None:
    from conftest import make_texts, write_corpus

    corpus = write_corpus(tmp_path / "in.parquet", make_texts(10), source=pa.array(["a"] * 10))
    # The model path does not exist: reaching the model would raise a ModelError, not these.
    with pytest.raises(InputError, match="--group-by column 'product'"):
        validate([str(corpus)], tmp_path / "out", load_config(model=str(tmp_path / "no-model"), group_by=("product",)))
    with pytest.raises(InputError, match="--time-column 'created_at' is not in the input"):
        validate([str(corpus)], tmp_path / "out", load_config(model=str(tmp_path / "no-model"), time_column="created_at"))
    assert not (tmp_path / "out").exists()


def test_run_writes_stats_matching_the_run_summary(tmp_path: Path, tiny_model: str) -> None:
    from conftest import make_texts, write_corpus

    from emodraw_batch.job.runner import run

    texts = make_texts(50, seed=3) + ["", "   ", None]
    n = len(texts)
    when = [START + timedelta(hours=7 * i) for i in range(n)]
    corpus = write_corpus(
        tmp_path / "in.parquet", texts, row_group_size=20,
        created_at=pa.array(when, pa.timestamp("us", tz="UTC")), source=pa.array(["x", "y"] * (n // 2) + ["x"] * (n % 2)),
    )
    config = load_config(model=tiny_model, shard_rows=20, group_by=("source",), time_column="created_at", every="1d")
    summary = run([str(corpus)], tmp_path / "out", config)

    written = stats.read_summary(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stats"] == "stats/summary.json"
    # Two independent counts agree: the runner's per-shard counters and polars over the files.
    assert {r["emotion"]: r["count"] for r in written["overall"] if r["count"]} == summary.emotions
    assert written["unclassified"] == {k: v for k, v in summary.status.items() if k != "ok"}
    assert written["rows"] == summary.rows == n
    assert written["time"]["buckets"] == len({t.date() for t in when[:50]})
    assert list(written["group_by"]) == ["source"]


def test_stats_command_uses_the_run_options_and_prints_json(output: Path) -> None:
    (output / "manifest.json").write_text(
        json.dumps({"config": {"group_by": ["source"], "time_column": "created_at", "every": "1d"}})
    )
    runner = CliRunner()
    shown = runner.invoke(app, ["stats", str(output)])
    assert shown.exit_code == 0, shown.output
    assert "Emotion shares by source" in shown.output and "Emotion shares per 1d of created_at" in shown.output
    tables = {p.name for p in (output / "stats").glob("*.parquet")}
    assert tables == {"overall.parquet", "status.parquet", "by_source.parquet", "over_time.parquet"}

    result = runner.invoke(app, ["stats", str(output), "--group-by", "product_id", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = stats.compute(output, group_by=("product_id",))
    assert _close(data["overall"], expected.overall.to_dicts())
    assert _close(data["groups"]["product_id"], expected.groups["product_id"].to_dicts())
    assert data["over_time"] is None and data["time"] is None  # --group-by replaces the run's breakdown

    bad = runner.invoke(app, ["stats", str(output), "--time-column", "created_at", "--every", "fortnight"])
    assert bad.exit_code == 1 and "--every must be a positive polars duration" in bad.output
    assert "Traceback" not in bad.output


def _random_scores(rng, n: int) -> np.ndarray:
    """float32 scores with many ties (a coarse grid), a few full-precision values, and the ends 0 and 1."""
    coarse = rng.integers(0, 50, n) / 49
    fine = rng.random(n)
    scores = np.where(rng.random(n) < 0.7, coarse, fine).astype(np.float32)
    scores[rng.random(n) < 0.02] = np.float32(1.0)
    return scores


def _sizes(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    return frame.group_by(keys).agg(pl.len().alias("count"))


@pytest.mark.parametrize("small", [0, 100])  # every key counted; keys of up to 100 rows kept, the rest counted
def test_exact_median_equals_polars_median_with_ties_nulls_and_groups(small: int, monkeypatch) -> None:
    monkeypatch.setattr(median, "SMALL", small)
    rng = np.random.default_rng(3)
    n = 20_000
    scores = _random_scores(rng, n).tolist()
    for i in rng.choice(n, 500, replace=False):
        scores[i] = None
    frame = pl.DataFrame(
        {
            "emotion": rng.choice(LABELS, n),
            # group sizes from 1 row to thousands, a null group, odd and even counts
            "group": [None if g == 0 else f"g{g}" for g in np.minimum(rng.geometric(0.05, n), 120)],
            "emotion_score": pl.Series(scores, dtype=pl.Float32),
        }
    )
    for keys in (["emotion"], ["group", "emotion"], ["group"]):
        got = median.median(frame.lazy(), keys, _sizes(frame, keys))
        want = frame.group_by(keys).agg(pl.col("emotion_score").cast(pl.Float64).median().alias("median_score")).drop_nulls(
            "median_score"
        )
        joined = want.join(got, on=keys, how="full", nulls_equal=True, coalesce=True)
        assert joined.height == want.height == got.height
        assert (joined["median_score"] == joined["median_score_right"]).all(), joined.filter(
            pl.col("median_score") != pl.col("median_score_right")
        )


def test_exact_median_orders_negative_and_signed_zero_values_like_polars(monkeypatch) -> None:
    monkeypatch.setattr(median, "SMALL", 0)  # every key counted
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [(rng.standard_normal(999) * 10.0 ** rng.integers(-30, 30, 999)).astype(np.float32), np.float32([-0.0, 0.0, np.inf, -np.inf])]
    )
    frame = pl.DataFrame({"k": rng.integers(0, 7, values.size), "emotion_score": pl.Series(values, dtype=pl.Float32)})
    got = median.median(frame.lazy(), ["k"], _sizes(frame, ["k"]))
    want = frame.group_by("k").agg(pl.col("emotion_score").cast(pl.Float64).median().alias("want"))
    joined = want.join(got, on="k")
    assert joined.height == 7 and (joined["want"] == joined["median_score"]).all(), joined
