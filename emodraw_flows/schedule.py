"""Nightly runs: the label flow served as a Prefect deployment on a cron schedule.

`{date}` in the input and output patterns is filled from each run's scheduled start
time, in the schedule's timezone, so the 02:00 run of 5 November reads
`tweets/2026-11-05/*.parquet` and writes `out/2026-11-05`, even when it starts late
or is retried the next day (`label.run_day`). Prefect is imported only inside the functions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from emodraw_batch.config import RunConfig
from emodraw_batch.dates import zone
from emodraw_batch.errors import ConfigError

from emodraw_flows.settings import EngineConfig, as_parameters

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEPLOYMENT_NAME = "nightly"


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
    engine: EngineConfig,
    name: str = DEPLOYMENT_NAME,
    trend: Sequence[str] = (),
) -> RunnerDeployment:
    """The label flow as a deployment with this cron schedule and these (templated) parameters.

    `trend`: output folders or globs to check for an emotion shift after each run (into its artifact).
    """
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from emodraw_flows.label import label_corpus  # imports Prefect: only when a deployment is made

    check_cron(cron)
    zone(timezone)
    return label_corpus.to_deployment(
        name=name,
        # `emodraw_flows.label.label_corpus`, imported from the installed package by each run's process,
        # wherever `schedule` was started (a file path would be relative to this directory).
        entrypoint_type=EntrypointType.MODULE_PATH,
        schedule=Cron(cron, timezone=timezone or "UTC"),
        parameters={
            "inputs": list(inputs),
            "output": output,
            "config": as_parameters(config, engine),
            "timezone": timezone or "UTC",
            **({"trend": list(trend)} if trend else {}),
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


def serve(deploy: RunnerDeployment, on_stop: Callable[[int], None] | None = None) -> None:
    """Register the deployment and run its scheduled runs in this process until SIGTERM or Ctrl-C.

    Prefect's runner handles SIGTERM itself: it cancels the runs in flight (their processes end,
    Prefect marks them Cancelled) and pauses the deployment's schedule; Ctrl-C does the same here.
    `on_stop(signal)` is told first, so that the caller can bound how long that takes. The
    deployment stays registered on the server, paused; serving it again resumes the schedule.
    """
    import asyncio
    import signal

    from prefect.runner import Runner

    require_server()

    class BoundedRunner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            if on_stop is not None:
                on_stop(args[0] if args else signal.SIGTERM)
            super().handle_sigterm(*args, **kwargs)

    runner = BoundedRunner(pause_on_shutdown=True)
    runner.add_deployment(deploy)
    signal.signal(signal.SIGINT, runner.handle_sigterm)  # Ctrl-C stops the runs in flight as SIGTERM does
    try:
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        pass
