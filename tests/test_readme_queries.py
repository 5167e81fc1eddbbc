"""The polars queries of the docs run, as written, on real outputs of the tiny model.

The python blocks of the "Query with polars" section of docs/statistics.md (moved there
from the README) are executed in order, in one namespace, from a folder holding
`out/sample/` (the README's `--output out/sample`) and two nightly outputs
`out/nightly/run_date=.../`; so is the query of the README's tour. Their results (by the
names the docs give them) are checked against a recomputation in plain Python from pyarrow.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_texts, write_corpus

from emodraw_batch.config import load_config
from emodraw_batch.job.runner import run

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STATISTICS = ROOT / "docs" / "statistics.md"
NIGHTS = ("2026-11-23", "2026-11-24")


def python_blocks(page: Path, section: str) -> list[str]:
    """The python code blocks of one `## section` of a Markdown page, in order."""
    text = page.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def _corpus(path: Path, n: int, seed: int, start_id: int, silent_shard: bool = False) -> Path:
    """Tweets and reviews with a time and product column; optionally a first shard with no text at all."""
    texts: list[str | None] = make_texts(n, seed=seed)
    texts[3], texts[7], texts[11] = "", "   ", None
    if silent_shard:
        texts[:20] = [None, ""] * 10  # one whole shard (20 rows) with nothing to classify
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    return write_corpus(
        path,
        texts,
        row_group_size=20,
        start_id=start_id,
        created_at=pa.array([start + timedelta(hours=9 * i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        source=pa.array(["review" if i % 2 else "twitter" for i in range(n)]),
        product_id=pa.array([f"B{i % 7:02d}" if i % 2 else None for i in range(n)]),
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model: str) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    first = _corpus(folder / "in" / "a.parquet", 60, seed=21, start_id=0)
    second = _corpus(folder / "in" / "b.parquet", 50, seed=22, start_id=1000, silent_shard=True)
    config = load_config(model=tiny_model, shard_rows=20)
    run([str(first)], folder / "out" / "sample", config)
    run([str(first)], folder / "out" / "nightly" / f"run_date={NIGHTS[0]}", config)
    run([str(second)], folder / "out" / "nightly" / f"run_date={NIGHTS[1]}", config)
    return folder


def _rows(pattern: str, root: Path) -> list[dict]:
    return [row for path in sorted(root.glob(pattern)) for row in pq.read_table(path).to_pylist()]


def docs_blocks() -> list[str]:
    return python_blocks(STATISTICS, "Query with polars")


def test_docs_have_the_queries() -> None:
    blocks = docs_blocks()
    assert len(blocks) >= 4
    assert all("pl.scan_parquet(" in b or "labels" in b for b in blocks)


def test_docs_queries_run_and_are_right(workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(workdir)
    namespace: dict = {}
    for block in docs_blocks():
        exec(compile(block, "docs/statistics.md", "exec"), namespace)  # noqa: S102 - the docs' own code
    capsys.readouterr()
    rows = _rows("out/sample/labels/*.parquet", workdir)
    ok = [r for r in rows if r["status"] == "ok"]
    assert 0 < len(ok) < len(rows)

    days: dict[datetime, list[str]] = defaultdict(list)
    for r in ok:
        days[r["created_at"].replace(hour=0, minute=0, second=0)].append(r["emotion"])
    got = namespace["anger_per_day"]
    assert got["day"].to_list() == sorted(days)
    assert got["rows"].to_list() == [len(days[d]) for d in sorted(days)]
    assert got["anger_share"].to_list() == pytest.approx([days[d].count("anger") / len(days[d]) for d in sorted(days)])

    products: dict[str, list[str]] = defaultdict(list)
    for r in ok:
        if r["product_id"] is not None:
            products[r["product_id"]].append(r["emotion"])
    ranked = sorted(products, key=lambda p: (-products[p].count("sadness") / len(products[p]), -len(products[p]), p))
    assert namespace["top_sad"]["product_id"].to_list() == ranked[:10]

    low = sorted((r for r in ok if r["emotion_score"] < 0.5), key=lambda r: r["emotion_score"])
    assert namespace["unsure"]["id"].to_list() == [r["id"] for r in low]
    assert namespace["unsure"]["emotion_score"].is_sorted()

    per_night = namespace["per_night"]
    for night in NIGHTS:
        night_rows = _rows(f"out/nightly/run_date={night}/labels/*.parquet", workdir)
        labelled = Counter(r["emotion"] for r in night_rows if r["status"] == "ok")
        got_night = per_night.filter(pl.col("run_date") == date.fromisoformat(night))
        assert dict(got_night.select("emotion", "rows").iter_rows()) == labelled
        assert got_night["share"].sum() == pytest.approx(1.0)
    assert per_night.schema["run_date"] == pl.Date


def test_readme_tour_query_runs_and_is_right(workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    (block,) = python_blocks(README, "A tour")
    monkeypatch.chdir(workdir)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    capsys.readouterr()
    labelled = Counter(r["emotion"] for r in _rows("out/sample/labels/*.parquet", workdir) if r["status"] == "ok")
    shares = namespace["shares"]
    assert dict(shares.select("emotion", "len").iter_rows()) == labelled
    assert shares["len"].to_list() == sorted(labelled.values(), reverse=True)


def test_emotion_is_a_plain_string_in_every_file_of_every_run(workdir: Path) -> None:
    files = sorted(workdir.glob("out/**/labels/*.parquet"))
    assert len(files) == 3 + 3 + 3
    silent = 0
    for path in files:
        schema = pq.read_schema(path)
        assert schema.field("emotion").type == pa.string(), path
        assert schema.field("emotion_score").type == pa.float32(), path
        table = pq.read_table(path, columns=["emotion"])
        silent += table["emotion"].null_count == table.num_rows  # a shard with nothing classified
    assert silent == 1
    # One scan over every shard of both nights: no schema error, and every row comes back.
    both = pl.scan_parquet(str(workdir / "out/nightly/run_date=*/labels/*.parquet"), hive_partitioning=True)
    frame = both.select("emotion", "run_date").collect()
    assert frame.schema == pl.Schema({"emotion": pl.String, "run_date": pl.Date})
    assert frame.height == 60 + 50
    assert frame.group_by("run_date").len().sort("run_date")["len"].to_list() == [60, 50]
