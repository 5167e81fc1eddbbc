"""Nightly runs: the label flow served as a Prefect deployment on a cron schedule.

`{date}` in the input and output patterns is filled from each run's scheduled start
time, in the schedule's timezone, so the 02:00 run of 5 November reads
`tweets/2026-11-05/*.parquet` and writes `out/2026-11-05`, even when it starts late
or is retried the next day. Prefect is imported only inside the functions.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from emodraw_batch.config import RunConfig
from emodraw_batch.errors import ConfigError

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEPLOYMENT_NAME = "nightly"
# {date}, {yesterday}, optionally with a strftime format: {date:%Y/%m/%d}. Other braces are left alone.
_PLACEHOLDER = re.compile(r"\{(date|yesterday)(?::([^{}]+))?\}")


def fill_dates(pattern: str, day: dt.date) -> str:
    """'{date}' -> '2026-11-05', '{yesterday}' -> '2026-11-04', '{date:%Y/%m/%d}' -> '2026/11/05'."""

    def value(match: re.Match[str]) -> str:
        when = day if match[1] == "date" else day - dt.timedelta(days=1)
        return when.strftime(match[2]) if match[2] else when.isoformat()

    return _PLACEHOLDER.sub(value, pattern)


def zone(timezone: str | None) -> ZoneInfo:
    """The IANA timezone (default UTC), or a clear error."""
    try:
        return ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"--timezone {timezone!r} is not an IANA timezone name. Pass one such as UTC, Europe/Berlin or "
            "America/New_York."
        ) from None


def run_day(timezone: str | None) -> dt.date:
    """The calendar day of this flow run's scheduled start (now, for a run started by hand)."""
    from prefect.runtime import flow_run

    return flow_run.scheduled_start_time.astimezone(zone(timezone)).date()


def check_cron(cron: str) -> None:
    from prefect._vendor.croniter import croniter  # what Prefect itself validates schedules with

    if not croniter.is_valid(cron):
        raise ConfigError(
            f"--cron {cron!r} is not a cron expression. Pass five fields: minute hour day-of-month month "
            "day-of-week, e.g. '0 2 * * *' for 02:00 every day."
        )


def next_runs(cron: str, timezone: str | None, n: int, start: dt.datetime | None = None) -> list[dt.datetime]:
    """The next `n` scheduled start times (from `start`, default now), computed as Prefect's scheduler does."""
    import asyncio

    from prefect.server.schemas.schedules import CronSchedule

    check_cron(cron)
    zone(timezone)
    return list(asyncio.run(CronSchedule(cron=cron, timezone=timezone or "UTC").get_dates(n=n, start=start)))


def deployment(
    cron: str,
    timezone: str | None,
    inputs: Sequence[str],
    output: str,
    config: RunConfig,
    name: str = DEPLOYMENT_NAME,
) -> RunnerDeployment:
    """The label flow as a deployment with this cron schedule and these (templated) parameters."""
    from prefect.schedules import Cron

    from .label import label_corpus

    check_cron(cron)
    zone(timezone)
    return label_corpus.to_deployment(
        name=name,
        schedule=Cron(cron, timezone=timezone or "UTC"),
        parameters={
            "inputs": list(inputs),
            "output": output,
            "config": config.model_dump(mode="json", exclude_defaults=True),
            "timezone": timezone or "UTC",
        },
        description=f"emodraw-batch: label {', '.join(inputs)} into {output} at '{cron}' ({timezone or 'UTC'}).",
        tags=["emodraw-batch"],
    )


def require_server() -> str:
    """The Prefect server's API URL; serving needs one, since the temporary local API has no scheduler."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ConfigError(
            "Serving a schedule needs a Prefect server: Prefect's temporary local API has no scheduler, so no run "
            "would ever start. Start one (`prefect server start`) and point to it with "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`, then run this command again. "
            "(--next N lists the run times without a server.)"
        )
    return str(PREFECT_API_URL.value())


def serve(deploy: RunnerDeployment) -> None:
    """Register the deployment and run its scheduled runs in this process until stopped (Ctrl-C)."""
    from prefect import serve as prefect_serve

    require_server()
    prefect_serve(deploy)
