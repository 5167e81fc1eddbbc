"""The Prefect flow that `emodraw-batch run` executes: plan the shards, label each one in a task, finish.

The tasks are thin: all the work is `emodraw_batch.job.runner` (plan, label_shard, finish),
which knows nothing of Prefect. A shard task returns its output path and small
counts, never data. Where the shard tasks run is the config's engine (flows.engines).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.settings import PREFECT_API_URL

from emodraw_batch.files import guard, lock
from emodraw_batch.job import runner
from emodraw_batch.config import RunConfig
from emodraw_batch.dates import fill_dates, zone
from emodraw_batch.errors import ConfigError, EmodrawError, ModelError
from emodraw_batch.inference.classifier import load_count
from emodraw_batch.job.plan import Plan, ShardResult, plan
from emodraw_batch.files.reader import Shard
from emodraw_batch.files.storage import unreachable
from emodraw_batch.job.validate import Job, validate

from . import artifacts, engines, outage
from .settings import EngineConfig, as_parameters, load_settings

OnRows = Callable[[int], None]

# The caller's progress callback. It never travels as a flow or task parameter (it is not
# data); the local engine's task thread inherits it, Dask shards report when they finish.
_on_rows: ContextVar[OnRows | None] = ContextVar("emodraw_on_rows", default=None)
# The job the caller (the CLI) already validated: the flow run it starts reuses it instead of
# reading every input footer again. Compared with the flow's own parameters before use.
_job: ContextVar[Job | None] = ContextVar("emodraw_job", default=None)


class ShardFailed(EmodrawError):
    """Shards failed after their retries; the finished ones are kept and a rerun resumes."""


@dataclass
class ShardDone:
    """What a shard task returns: the shard's counts, the model that labelled it and where it ran."""

    result: ShardResult
    model: dict[str, Any]
    worker: str  # host:pid of the process that ran the shard
    model_loads: int  # times that process has loaded this model so far: 1 means loaded once, then reused


def _retry(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures only: an EmodrawError (bad model, input or setting) would fail again."""
    return not isinstance(state.data, EmodrawError)


@task(name="plan-shards", cache_policy=NONE)
def plan_shards(job: Job) -> Plan:
    """Claim the output folder (run.json) and find the shards an earlier run finished."""
    return plan(job)


def _label_shard(shard: Shard, config: RunConfig, out_dir: str, run_id: str | None = None) -> ShardDone:
    """Label one shard into out_dir/labels/ with this process's cached model; published only while `run_id` owns it."""
    from prefect.runtime import task_run

    with outage.watching(shard, first_attempt=task_run.run_count <= 1):
        clf = runner.shard_classifier(config)  # loaded on first use in this process, then reused
        result = runner.label_shard(shard, config, out_dir, on_rows=_on_rows.get(), classifier=clf, run_id=run_id)
    loads = load_count(**runner.classifier_settings(config))
    return ShardDone(result, clf.describe(), f"{socket.gethostname()}:{os.getpid()}", loads)


# Not a decorator: the function keeps its own module-level name, so Dask pickles it by
# reference (workers import flows.label) instead of by value with this module's globals.
label_shard = task(
    _label_shard, name="label-shard", task_run_name="label {shard.name}", cache_policy=NONE, retry_condition_fn=_retry
)


@task(name="finish", cache_policy=NONE)
def finish(
    planned: Plan, results: list[ShardResult], seconds: float, model: dict[str, Any] | None, engine: EngineConfig,
    run_date: str | None = None,
) -> runner.Summary:
    """Check rows in = rows out, write the manifest and the statistics."""
    return runner.finish(planned, results, seconds, model, engine.model_dump(mode="json"), run_date)


def _failure(shard: Shard, exc: BaseException, retries: int) -> str:
    how = "(not retried)" if isinstance(exc, EmodrawError) else f"after {retries + 1} attempt(s)"
    where = f"row groups {shard.start}-{max(shard.start, shard.stop - 1)} of {shard.path!r}"
    return f"{shard.name} ({where}) failed {how}: {type(exc).__name__}: {exc}"


def _loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host == "localhost" or host.startswith("127.")


def _cancel(futures: dict[Any, Shard]) -> None:
    """Cancel the shard tasks not started yet (the run is ending: the others would fail the same way)."""
    for future in futures:
        future.wrapped_future.cancel()


def label_all(planned: Plan, engine: EngineConfig) -> list[ShardDone]:
    """Run one task per unfinished shard on the configured engine; fail loudly if any still fails."""
    logger = get_run_logger()
    config = planned.job.config
    todo = planned.todo
    task_runner, where = engines.task_runner(engine, config.device)
    logger.info("%s; %d shard(s) to label, %d already complete", where, len(todo), len(planned.done))
    api = str(PREFECT_API_URL.value() or "")
    if engine.address and _loopback(api) and not _loopback(engine.address):
        logger.warning(
            "The Dask workers at %s report their task runs to the Prefect API at %s, which only this machine can "
            "reach. Run a Prefect server the workers can reach and set PREFECT_API_URL to it (see the README).",
            engine.address,
            api,
        )
    if not todo:
        return []
    shard_task = label_shard.with_options(retries=engine.retries, retry_delay_seconds=engine.retry_delay)
    on_rows = _on_rows.get()
    out_dir = planned.job.out.location  # Dask workers may run elsewhere: an absolute path or the URI, as a string
    done: list[ShardDone] = []
    failed: list[tuple[Shard, BaseException]] = []
    outage.reset()
    with task_runner:
        # planned.config: precision and runtime as resolved once for the run; workers never resolve them again.
        args = {"config": planned.config, "out_dir": out_dir, "run_id": planned.run_id}
        futures = {task_runner.submit(shard_task, {"shard": s, **args}): s for s in todo}
        for future in as_completed(list(futures)):
            shard = futures[future]
            try:
                outcome: ShardDone = future.result()
            except (ModelError, ConfigError, guard.Superseded):
                # The model or a setting is wrong, or another run owns the folder now: every other shard would fail the same way.
                _cancel(futures)
                raise
            except Exception as exc:  # this shard only (damaged row group, lost worker...): let the rest finish
                if unreachable(exc):  # the store is down: every other shard would wait out its retries too
                    _cancel(futures)
                    out = planned.job.out
                    raise outage.StoreUnreachable(outage.paragraph(
                        shard, exc, out.uri, len(done) + len(planned.done), out.show(out.labels),
                        len(todo) - len(done) - len(failed) - 1)) from None
                failed.append((shard, exc))
                continue
            done.append(outcome)
            release = getattr(future.wrapped_future, "release", None)
            if release:  # a Dask future: let the worker drop the result, or a lost worker would redo the shard
                release()
            if on_rows and engine.engine != "local":  # local shards report their rows window by window
                on_rows(outcome.result.rows)
            r = outcome.result
            logger.info("%s: %d rows in %.1f s on %s", shard.name, r.rows, r.seconds, outcome.worker)
    if failed:
        raise ShardFailed(
            f"{len(failed)} of {len(todo)} shard(s) failed: "
            + "; ".join(_failure(s, e, engine.retries) for s, e in failed)
            + f". The {len(done) + len(planned.done)} finished shard(s) are kept in {planned.job.out.show(planned.job.out.labels)!r}; "
            "fix the cause and run the same command again to label only the missing shards."
        )
    return done


def _workers(done: list[ShardDone]) -> dict[str, dict[str, int]]:
    """Per worker process: shards labelled and model loads (1 each: loaded once per process)."""
    workers: dict[str, dict[str, int]] = {}
    for d in done:
        w = workers.setdefault(d.worker, {"shards": 0, "model_loads": 0})
        w["shards"] += 1
        w["model_loads"] = max(w["model_loads"], d.model_loads)
    return workers


def run_day(timezone: str | None) -> dt.date:
    """The calendar day of this flow run's scheduled start (now, for a run started by hand)."""
    from prefect.runtime import flow_run

    return flow_run.scheduled_start_time.astimezone(zone(timezone)).date()


@flow(name="emodraw-label", description="Label the emotion of every text in Parquet corpora, shard by shard.")
def label_corpus(
    inputs: list[str],
    output: str,
    config: dict[str, Any] | None = None,
    overwrite: bool = False,
    timezone: str | None = None,
    config_file: str | None = None,
    trend: list[str] | None = None,
) -> dict[str, Any]:
    """Validate, plan the shards, label every unfinished one, write the manifest; returns the run summary.

    The settings are `config_file` (a TOML file, as --config) overridden by `config` (the keys of
    RunConfig and EngineConfig). `{date}`, `{yesterday}` (and `{date:%Y/%m/%d}`) in `inputs` and
    `output` are filled from this run's scheduled start time in `timezone` (default UTC).
    Public as `flows.label_corpus`: called from a user's own flow, it runs as a subflow
    (docs/python-api.md). The summary is `Summary.to_dict()` plus `workers` (shards and model
    loads per worker process).
    """
    started = time.perf_counter()
    cfg, engine = load_settings(config_file, **(config or {}))
    day = run_day(timezone)
    specs, out = [fill_dates(p, day) for p in inputs], fill_dates(output, day)
    job = _validated(specs, out, cfg, overwrite) or validate(specs, out, cfg, overwrite)
    with lock.held(job.out):  # one writer per output folder, from planning to the manifest
        planned = plan_shards(job)
        done = label_all(planned, engine)
        # The model as the workers loaded it; with nothing left to label, finish reads it from the outputs.
        model = done[0].model if done else None
        summary = finish(planned, [d.result for d in done], time.perf_counter() - started, model, engine, day.isoformat())
    result = {**summary.to_dict(), "workers": _workers(done)}
    shift = artifacts.shift_summary([fill_dates(p, day) for p in trend]) if trend else None
    artifacts.publish(result, specs, model, lambda: runner.written_model(job.out), shift=shift)
    return result


def _validated(specs: list[str], output: str, config: RunConfig, overwrite: bool) -> Job | None:
    """The job `run` validated for this very flow run, if this is it; a scheduled run validates here."""
    job = _job.get()
    same = job is not None and list(job.specs) == specs and job.out.uri == output
    return job if same and job.config == config and job.overwrite == overwrite else None


@contextmanager
def reporting(on_rows: OnRows | None, job: Job | None = None) -> Iterator[None]:
    """Send the flow's progress (rows labelled) to `on_rows` and hand it the validated `job`, in this process."""
    tokens = _on_rows.set(on_rows), _job.set(job)
    try:
        yield
    finally:
        _on_rows.reset(tokens[0])
        _job.reset(tokens[1])


def start_api() -> str:
    """The Prefect API this run reports to: PREFECT_API_URL, or else Prefect's temporary local server.

    Prefect would start the temporary server itself, but only for this process; starting it
    here gives its URL to the Dask workers too, which would otherwise each start their own.
    """
    if PREFECT_API_URL.value():
        return str(PREFECT_API_URL.value())
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    from . import api

    prestarted = api.url(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    if prestarted:  # launched by the CLI before its own imports (flows/api.py)
        return prestarted
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # Prefect's own per-process instance, stopped at exit
    server.start()
    return server.api_url


class ExplainedFailures(logging.Filter):
    """Keeps off the terminal Prefect's logs of failures that the run explains in its one paragraph.

    Dropped: a log whose exception is an EmodrawError or an environment error (OSError: a full disk,
    an unreachable store), with its traceback, and the "Finished in state Failed" lines. Kept: all
    else, and the traceback of any other exception (a bug). Prefect's API and UI get every log.
    """

    EXPLAINED = (EmodrawError, OSError)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("prefect"):
            return True
        if record.exc_info and record.exc_info[1] is not None:
            return not isinstance(record.exc_info[1], self.EXPLAINED)
        return not (record.levelno >= logging.ERROR and str(record.msg).startswith("Finished in state"))


@contextmanager
def terminal_logs(verbose: bool) -> Iterator[None]:
    """Prefect's console handlers without the explained failures (all of them with --verbose)."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # Prefect configures its handlers on first use: now, so that there are some to filter
    console = [logging.getLogger(name) for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs")]
    handlers = [h for lg in console for h in lg.handlers if isinstance(h, logging.StreamHandler)]  # not the API's
    quiet = ExplainedFailures()
    for handler in [] if verbose else handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def execute(job: Job, engine: EngineConfig, on_rows: OnRows | None = None, verbose: bool = False) -> dict[str, Any]:
    """The flow for a validated job, reporting to PREFECT_API_URL or the temporary local API (flows/run.py
    holds the folder's lock around it)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    settings: dict[Any, Any] = {PREFECT_API_URL: start_api()}
    if not PREFECT_API_URL.value():
        # Heartbeats tell a server that a flow run is still alive; the temporary server ends with this
        # process, so it has no use for them, and ending their thread costs up to a second at the flow's end
        # (it sleeps in 1 s steps). A configured server (PREFECT_API_URL) keeps Prefect's heartbeats.
        settings[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    with temporary_settings(settings), reporting(on_rows, job), terminal_logs(verbose):
        return label_corpus(list(job.specs), job.out.uri, as_parameters(job.config, engine), job.overwrite)
