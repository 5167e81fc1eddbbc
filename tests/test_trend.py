"""`emodraw-batch trend` (issue #25, part 2): runs ordered by date, unfinished ones listed, from manifests and stats only."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from conftest import make_texts, write_corpus
from typer.testing import CliRunner

from emodraw_batch.analysis import trend as tr
from emodraw_cli.app import app

cli = CliRunner()


def fake_run(folder: Path, run_date: str | None, counts: dict[str, int], finished_at: str = "2026-01-01T00:00:00+00:00") -> Path:
    """An output folder as a finished run leaves it: only the two files trend reads (no labels at all)."""
    (folder / "stats").mkdir(parents=True)
    total = sum(counts.values())
    manifest = {"summary": {"rows": total + 1}, "run_date": run_date, "finished_at": finished_at}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    overall = [{"emotion": e, "count": n, "share": n / total} for e, n in counts.items()]
    (folder / "stats" / "summary.json").write_text(json.dumps({"rows": total + 1, "overall": overall}))
    return folder


def test_runs_are_ordered_by_their_date_and_unfinished_ones_are_listed(tmp_path):
    fake_run(tmp_path / "nightly" / "b", "2026-11-26", {"joy": 60, "sadness": 40})
    fake_run(tmp_path / "nightly" / "a", "2026-11-27", {"joy": 30, "sadness": 70})
    fake_run(tmp_path / "nightly" / "c", None, {"joy": 50, "fear": 50}, finished_at="2026-11-25T23:10:00+00:00")
    (tmp_path / "nightly" / "d").mkdir()  # a run that never finished: no manifest
    (tmp_path / "nightly" / "notes.txt").write_text("not a run")  # files are not runs
    runs = tr.trend([str(tmp_path / "nightly" / "*")])
    assert [(Path(r.output).name, r.date, r.status) for r in runs] == [
        ("c", "2026-11-25", "complete"), ("b", "2026-11-26", "complete"), ("a", "2026-11-27", "complete"),
        ("d", None, "unfinished")]
    assert runs[1].shares == {"joy": 0.6, "sadness": 0.4} and runs[1].rows == 101
    assert tr.labels_of(runs) == ["sadness", "joy", "fear"]  # the canonical order
    rows = tr.to_dicts(runs)
    assert rows[0]["share_fear"] == 0.5 and rows[0]["share_sadness"] is None and rows[3]["rows"] is None


def test_the_cli_prints_json_and_draws_the_chart(tmp_path):
    fake_run(tmp_path / "out" / "x", "2026-11-26", {"joy": 1, "love": 3})
    fake_run(tmp_path / "out" / "y", "2026-11-27", {"joy": 3, "love": 1})
    chart = tmp_path / "charts" / "trend.png"
    result = cli.invoke(app, ["trend", str(tmp_path / "out" / "*"), "--json", "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert [r["date"] for r in runs] == ["2026-11-26", "2026-11-27"] and runs[1]["share_joy"] == 0.75
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = cli.invoke(app, ["trend", str(tmp_path / "out" / "x"), str(tmp_path / "out" / "y")])
    assert table.exit_code == 0 and "75.0%" in table.stdout and "25.0%" in table.stdout


def test_a_glob_that_matches_nothing_is_one_paragraph(tmp_path):
    result = cli.invoke(app, ["trend", str(tmp_path / "nothing-*")])
    assert result.exit_code == 1 and "No output folder matches" in result.stderr and "Traceback" not in result.stderr


def test_a_real_run_records_the_day_it_stands_for(prefect_api, tiny_model, tmp_path):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(30, seed=8))
    result = cli.invoke(app, ["run", str(corpus), "-o", str(tmp_path / "runs" / "today"), "--model", tiny_model,
                              "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "runs" / "today" / "manifest.json").read_text())
    today = dt.datetime.now(dt.timezone.utc).date()
    assert manifest["run_date"] in {today.isoformat(), (today - dt.timedelta(days=1)).isoformat()}  # UTC midnight
    (run,) = tr.trend([str(tmp_path / "runs" / "*")])
    assert run.date == manifest["run_date"] and run.rows == 30 and abs(sum(run.shares.values()) - 1) < 1e-9
