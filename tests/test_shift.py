"""Shift detection (issue #25, part 3) on constructed runs: real shifts flagged, noise and trivia not."""

from __future__ import annotations

import json

import pytest
from test_trend import fake_run
from typer.testing import CliRunner

from emodraw_batch.analysis import shift as sh
from emodraw_batch.analysis.trend import Run, trend
from emodraw_cli.app import app

cli = CliRunner()


def run(date: str, rows: int, joy: float) -> Run:
    counts = {"joy": round(rows * joy), "sadness": rows - round(rows * joy)}
    return Run(f"out/{date}", date, "complete", rows, {k: v / rows for k, v in counts.items()}, counts)


def flagged(runs: list[Run], **options) -> set[tuple[str, str]]:
    return {(s.against, s.emotion) for s in sh.shifts(runs, **options) if s.flagged}


def test_an_injected_shift_is_flagged_against_the_previous_run_and_the_window():
    runs = [run(f"2026-11-{d:02d}", 100_000, 0.30) for d in range(1, 9)] + [run("2026-11-09", 100_000, 0.35)]
    assert flagged(runs) == {("previous", "joy"), ("previous", "sadness"), ("window", "joy"), ("window", "sadness")}
    (joy,) = [s for s in sh.shifts(runs) if s.against == "window" and s.emotion == "joy"]
    assert joy.change_pp == pytest.approx(5.0) and joy.p_value < 1e-100
    assert "joy 30.0% -> 35.0% (+5.0 pp" in sh.describe(runs, sh.shifts(runs))


def test_no_shift_is_not_flagged():
    runs = [run(f"2026-11-{d:02d}", 100_000, 0.30) for d in range(1, 9)]
    assert flagged(runs) == set()
    assert sh.describe(runs, sh.shifts(runs)).startswith("No emotion shifted in the run of 2026-11-08")


def test_a_tiny_significant_change_on_millions_of_rows_needs_the_practical_threshold():
    runs = [run("2026-11-01", 5_000_000, 0.300), run("2026-11-02", 5_000_000, 0.303)]
    (joy,) = [s for s in sh.shifts(runs) if s.against == "previous" and s.emotion == "joy"]
    assert joy.p_value < 1e-6 and not joy.flagged  # significant, but 0.3 points is not a shift
    assert flagged(runs, min_change=0.2) == {("previous", "joy"), ("previous", "sadness"), ("window", "joy"), ("window", "sadness")}


def test_small_runs_do_not_flag_noise():
    runs = [run("2026-11-01", 200, 0.30), run("2026-11-02", 200, 0.40)]  # 10 points, but on 200 rows: p ~ 0.04
    assert flagged(runs) == set()


def test_the_two_proportion_test_against_a_hand_computed_value():
    # 0.3 vs 0.4 on 200 rows each: pooled 0.35, z = 0.1 / sqrt(0.35 * 0.65 * 0.01) = 2.0966, two-sided p = 0.0360
    assert sh.two_proportion_p(60, 200, 80, 200) == pytest.approx(0.0360, abs=1e-4)
    assert sh.two_proportion_p(0, 10, 0, 10) == 1.0 and sh.two_proportion_p(1, 0, 1, 5) == 1.0


def test_the_cli_flags_and_fails_only_when_asked(tmp_path):
    fake_run(tmp_path / "out" / "a", "2026-11-26", {"joy": 30_000, "sadness": 70_000})
    fake_run(tmp_path / "out" / "b", "2026-11-27", {"joy": 40_000, "sadness": 60_000})
    glob = str(tmp_path / "out" / "*")
    shown = cli.invoke(app, ["trend", glob])
    assert shown.exit_code == 0 and "Shift in the run of 2026-11-27" in shown.stderr
    failed = cli.invoke(app, ["trend", glob, "--fail-on-shift", "--json"])
    assert failed.exit_code == 3
    result = json.loads(failed.stdout)
    assert any(s["flagged"] and s["emotion"] == "joy" for s in result["shifts"]) and "joy" in result["shift_summary"]
    assert cli.invoke(app, ["trend", glob, "--fail-on-shift", "--min-change", "20"]).exit_code == 0


def test_a_scheduled_run_puts_the_shift_check_into_its_artifact(prefect_api, tiny_model, tmp_path):
    from conftest import make_texts, write_corpus
    from test_artifacts import read_artifacts

    from emodraw_flows import artifacts
    from emodraw_flows.label import label_corpus

    fake_run(tmp_path / "runs" / "2026-01-01", "2026-01-01", {"joy": 50, "sadness": 50})
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(40, seed=6))
    out = tmp_path / "runs" / "tonight"
    summary = label_corpus([str(corpus)], str(out), {"model": tiny_model, "device": "cpu"}, trend=[str(tmp_path / "runs" / "*")])
    assert summary["rows"] == 40 and trend([str(tmp_path / "runs" / "*")])[-1].output.endswith("tonight")
    (markdown,) = read_artifacts(f"{artifacts.key_base(None, summary['output_dir'])}-summary")
    assert "shifted in the run of" in markdown.data or "Shift in the run of" in markdown.data
