"""Nightly schedules: {date} templating, the next-run listing, and one run of the served deployment."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import emodraw_flows  # noqa: F401  (Prefect defaults before Prefect is imported)
from conftest import make_texts, write_corpus
from emodraw_cli.app import app
from emodraw_batch.dates import fill_dates
from emodraw_batch.errors import ConfigError
from emodraw_flows import schedule
from emodraw_flows.settings import load_settings

cli = CliRunner()
DAY = dt.date(2026, 11, 5)


@pytest.mark.parametrize(
    ("pattern", "filled"),
    [
        ("tweets/{date}/*.parquet", "tweets/2026-11-05/*.parquet"),
        ("out/{yesterday}", "out/2026-11-04"),
        ("s3://b/{date:%Y/%m/%d}/part-*.parquet", "s3://b/2026/11/05/part-*.parquet"),
        ("in/{date:%Y%m%d}-{yesterday:%d}/{other}.parquet", "in/20261105-04/{other}.parquet"),  # other braces stay
        ("plain/path.parquet", "plain/path.parquet"),
    ],
)
def test_fill_dates(pattern, filled):
    assert fill_dates(pattern, DAY) == filled


def test_yesterday_crosses_month_and_year():
    assert fill_dates("{yesterday}", dt.date(2027, 1, 1)) == "2026-12-31"


def test_next_runs_follow_the_cron_in_its_timezone():
    start = dt.datetime(2026, 11, 5, 0, 30, tzinfo=dt.timezone.utc)  # 01:30 in Berlin: 02:00 is still ahead
    runs = schedule.next_runs("0 2 * * *", "Europe/Berlin", 3, start=start)
    berlin = [r.astimezone(ZoneInfo("Europe/Berlin")) for r in runs]
    assert [(b.date(), b.hour, b.minute) for b in berlin] == [(DAY + dt.timedelta(days=i), 2, 0) for i in range(3)]
    # Weekdays only: from a Friday the next runs skip the weekend.
    friday = dt.datetime(2026, 11, 6, 12, 0, tzinfo=dt.timezone.utc)
    weekdays = schedule.next_runs("0 2 * * 1-5", "UTC", 2, start=friday)
    assert [r.date().weekday() for r in weekdays] == [0, 1]  # Monday, Tuesday


def test_schedule_next_prints_run_times_and_folders_without_serving():
    result = cli.invoke(
        app,
        ["schedule", "--cron", "30 1 * * *", "--timezone", "America/New_York", "--next", "3",
         "--input", "tweets/{date}/*.parquet", "--output", "out/{date}"],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    now = dt.datetime.now(dt.timezone.utc)
    times = [dt.datetime.fromisoformat(line.split()[0]) for line in lines]
    assert now <= times[0] < times[1] < times[2]
    for line, when in zip(lines, times):
        local = when.astimezone(ZoneInfo("America/New_York"))
        assert (local.hour, local.minute) == (1, 30)
        day = local.date().isoformat()
        assert line.split(maxsplit=1)[1] == f"tweets/{day}/*.parquet -> out/{day}"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--cron", "every night", "--next", "2"], "not a cron expression"),
        (["--timezone", "Mars/Olympus", "--next", "2"], "IANA timezone"),
        (["--next", "2", "--config", "nope.toml"], "does not exist"),
    ],
)
def test_schedule_rejects_bad_settings(args, words):
    result = cli.invoke(app, ["schedule", *args])
    assert result.exit_code == 1 and words in result.stderr


def test_serving_needs_a_prefect_server():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # no server configured
        with pytest.raises(ConfigError, match="prefect server start"):
            schedule.require_server()


def test_a_run_of_the_deployment_labels_its_scheduled_day(prefect_api, tiny_model, tmp_path):
    """Register the nightly deployment, schedule one run for a past 02:00, let a served runner execute it."""
    from prefect import get_client
    from prefect.runner import Runner
    from prefect.states import Scheduled

    tz = "Europe/Berlin"
    day = dt.datetime.now(ZoneInfo(tz)).date() - dt.timedelta(days=2)  # due now, whatever today is
    write_corpus(tmp_path / "tweets" / day.isoformat() / "a.parquet", make_texts(70, seed=5), row_group_size=20)
    # Another day's data, which this run must not touch.
    write_corpus(tmp_path / "tweets" / (day - dt.timedelta(days=1)).isoformat() / "a.parquet", make_texts(9, seed=6))
    config, engine = load_settings(None, model=tiny_model, shard_rows=40, device="cpu")
    deploy = schedule.deployment(
        "0 2 * * *", tz, [str(tmp_path / "tweets" / "{date}" / "*.parquet")], str(tmp_path / "out" / "{date}"),
        config, engine,
    )
    runner = Runner(name="emodraw-test", pause_on_shutdown=False)  # what `prefect serve` runs
    deployment_id = runner.add_deployment(deploy)

    with get_client(sync_client=True) as client:
        registered = client.read_deployment(deployment_id)
        assert registered.schedules[0].schedule.cron == "0 2 * * *"
        assert registered.schedules[0].schedule.timezone == tz
        when = dt.datetime.combine(day, dt.time(2, 0), ZoneInfo(tz))
        flow_run = client.create_flow_run_from_deployment(deployment_id, state=Scheduled(scheduled_time=when))

    asyncio.run(runner.start(run_once=True))  # picks up the due run, executes it, returns

    with get_client(sync_client=True) as client:
        finished = client.read_flow_run(flow_run.id)
    assert finished.state.is_completed(), finished.state
    out = tmp_path / "out" / day.isoformat()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["rows"] == 70
    assert [Path(i["path"]).parent.name for i in manifest["inputs"]] == [day.isoformat()]
    written = sum(pq.read_metadata(p).num_rows for p in (out / "labels").glob("*.parquet"))
    assert written == 70 and sorted(p.name for p in (tmp_path / "out").iterdir()) == [day.isoformat()]
