"""Charts and the HTML page (emodraw_batch.analysis.report) on a real output of the tiny model."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pyarrow as pa
import pytest
from conftest import make_texts, write_corpus
from typer.testing import CliRunner

from emodraw_cli.app import app
from emodraw_batch.emotions import COLORS as EMOTION_COLORS
from emodraw_batch.analysis.report import colors

CHARTS = {"overall.png", "over_time.png", "by_source.png", "by_product_id.png"}


@pytest.fixture(scope="module")
def output(tmp_path_factory, tiny_model: str, prefect_api: str) -> Path:
    """`emodraw-batch run ... --report` on a corpus with groups, a gap in time and rows without text.

    The run is a Prefect flow in this process, so it reports to the session's test server
    (`prefect_api`): without it, it would start a temporary server of its own, and Prefect's
    process-wide events worker would keep sending every later test's task-run events to that
    server after it has stopped (a test order that ran this first lost the run history of test_flows).
    """
    folder = tmp_path_factory.mktemp("report")
    texts = make_texts(70, seed=11) + ["", "  ", None]
    n = len(texts)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    when = [start + timedelta(hours=5 * i + (72 if i > 30 else 0)) for i in range(n)]  # a 3-day gap
    corpus = write_corpus(
        folder / "in.parquet",
        texts,
        row_group_size=25,
        created_at=pa.array(when, pa.timestamp("us", tz="UTC")),
        source=pa.array([["twitter", "review", "forum"][i % 3] for i in range(n)]),
        product_id=pa.array([f"P{i % 30:02d}" for i in range(n)]),  # more groups than a chart shows
    )
    result = CliRunner().invoke(
        app,
        [
            "run", str(corpus), "--output", str(folder / "out"), "--model", tiny_model, "--no-progress",
            "--group-by", "source", "--group-by", "product_id", "--time-column", "created_at", "--every", "1d",
            "--report",
        ],
    )
    assert result.exit_code == 0, result.output
    return folder / "out"


def _rgb(image_path: Path) -> np.ndarray:
    image = mpimg.imread(image_path)
    return (image[..., :3] * 255).round().astype(np.uint8)


def _pixels_of(rgb: np.ndarray, hex_colour: str) -> int:
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
    return int((rgb == target).all(axis=-1).sum())


def test_every_chart_is_a_readable_image(output: Path) -> None:
    folder = output / "charts"
    assert {p.name for p in folder.glob("*.png")} == CHARTS
    for name in CHARTS:
        rgb = _rgb(folder / name)
        height, width, _ = rgb.shape
        assert 500 <= width <= 2500 and 300 <= height <= 2500, (name, rgb.shape)
        packed = rgb.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
        assert len(np.unique(packed)) > 20  # drawn, not a blank canvas
    # 30 product ids: the chart shows the largest 25, so it stays as tall as a 25-bar chart.
    assert _rgb(folder / "by_product_id.png").shape[0] < 1.1 * 110 * (1.8 + 0.42 * 25)


def test_each_emotion_has_one_colour_in_every_chart(output: Path) -> None:
    summary = json.loads((output / "stats" / "summary.json").read_text())
    palette = colors(summary["labels"])
    overall, by_source = _rgb(output / "charts" / "overall.png"), _rgb(output / "charts" / "by_source.png")
    for row in summary["overall"]:
        colour = palette[row["emotion"]]
        assert colour == EMOTION_COLORS[row["emotion"]]
        if row["count"]:
            assert _pixels_of(overall, colour) > 50, row
            assert _pixels_of(by_source, colour) > 0, row
        else:
            assert _pixels_of(overall, colour) == 0, row


def test_unknown_labels_get_distinct_fixed_colours() -> None:
    first = colors(["joy", "neutral", "sarcasm", "anger"])
    assert first == colors(["joy", "neutral", "sarcasm", "anger"])
    assert first["joy"] == EMOTION_COLORS["joy"] and first["anger"] == EMOTION_COLORS["anger"]
    assert len(set(first.values())) == 4
    assert not {first["neutral"], first["sarcasm"]} & set(EMOTION_COLORS.values())


class _Page(HTMLParser):
    """Tags, link-like attributes and table rows of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.links: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_links_only_local_charts_and_shows_the_summary(output: Path) -> None:
    folder = output / "charts"
    text = (folder / "report.html").read_text()
    page = _Page()
    page.feed(text)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert "://" not in text
    assert sorted(page.links) == sorted(CHARTS)  # relative names of the PNGs beside the page
    assert all((folder / link).is_file() for link in page.links)

    summary = json.loads((output / "stats" / "summary.json").read_text())
    expected = [
        [r["emotion"], f"{r['count']:,}", f"{r['share']:.1%}",
         "–" if r["mean_score"] is None else f"{r['mean_score']:.3f}",
         "–" if r["median_score"] is None else f"{r['median_score']:.3f}"]
        for r in summary["overall"]
    ]
    assert page.rows[1:] == expected
    assert f"Rows: <b>{summary['rows']:,}</b>; classified: <b>{summary['classified']:,}</b>" in text
    assert summary["unclassified"] == {"empty": 1, "blank": 1, "null": 1}
    assert "blank: 1, empty: 1, null: 1" in text
    assert f"{summary['time']['empty_buckets']} empty" in text and summary["time"]["empty_buckets"] >= 2


def test_report_command_recomputes_missing_stats_and_drops_stale_charts(output: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    shutil.rmtree(copy / "stats")
    shutil.rmtree(copy / "charts")
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(copy)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (copy / "charts").glob("*.png")} == CHARTS  # the run's options, from the manifest
    assert (copy / "stats" / "summary.json").read_text() == (output / "stats" / "summary.json").read_text()

    assert runner.invoke(app, ["stats", str(copy), "--group-by", "source"]).exit_code == 0
    assert runner.invoke(app, ["report", str(copy)]).exit_code == 0
    assert {p.name for p in (copy / "charts").glob("*.png")} == {"overall.png", "by_source.png"}
    assert "by_product_id.png" not in (copy / "charts" / "report.html").read_text()


def test_report_on_a_folder_without_labels_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "holds no labelled output" in result.output and "Traceback" not in result.output
