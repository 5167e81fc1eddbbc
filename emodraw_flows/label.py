"""The Prefect flow that `emodraw-batch run` executes: plan the shards, label each one in a task, finish.

The tasks are thin: all the work is `emodraw_batch.job.runner` (plan, label_shard, finish),
which knows nothing of Prefect. A shard task returns its output path and small
counts, never data. Where the shard tasks run is the config's engine (emodraw_flows.engines).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlparse

from prefect import flow, get_run_logger
from prefect.settings import PREFECT_API_URL

# Absolute imports only: a deployment loads this file as a stand-alone module (not as part of
# emodraw_flows), where `from . import ...` fails. The tasks live in emodraw_flows.tasks (see there).
from emodraw_batch.config import RunConfig
from emodraw_batch.dates import fill_dates, zone
from emodraw_batch.errors import ConfigError, EmodrawError, ModelError
from emodraw_batch.files import guard, lock
from emodraw_batch.files.reader import Shard
from emodraw_batch.files.storage import unreachable
from emodraw_batch.job import runner
from emodraw_batch.job.plan import Plan
from emodraw_batch.job.validate import Job, validate
from emodraw_flows import artifacts, engines, outage, watch
from emodraw_flows.settings import EngineConfig, as_parameters, load_settings
from emodraw_flows.tasks import OnRows, ShardDone, finish, label_shard, on_rows, plan_shards

# The job the caller (the CLI) already validated: the flow run it starts reuses it instead of
# reading every input footer again. Compared with the flow's own parameters before use.
_job: ContextVar[Job | None] = ContextVar("emodraw_job", default=None)


class ShardFailed(EmodrawError):
    """Shards failed after their retries; the finished ones are kept and a rerun resumes."""


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
    """Run one task per unfinished shard on the configured engine; fail loudly if any still fails.

    Never waits without a bound: the run fails with one paragraph when nothing moves for the stall
    limit, or when a Dask cluster has no workers left (emodraw_flows/watch.py).
    """
    logger = get_run_logger()
    config = planned.job.config
    todo = planned.todo
    task_runner, where, gpu = engines.task_runner(engine, config.device)
    logger.info("%s; %d shard(s) to label, %d already complete", where, len(todo), len(planned.done))
    _warn_unreachable_api(engine, logger)
    if not todo:
        return []
    shard_task = label_shard.with_options(retries=engine.retries, retry_delay_seconds=engine.retry_delay)
    out_dir = planned.job.out.location  # Dask workers may run elsewhere: an absolute path or the URI, as a string
    limit = watch.stall_limit(engine.stall_timeout, config.window_rows, gpu)
    outage.reset()
    with task_runner:
        client = getattr(task_runner, "client", None)  # a Dask cluster's client; None for the local engine
        workers = (lambda: len(client.nthreads())) if client else None
        moving = watch.Watch(limit, on_rows.get(), workers, engine.workerless_timeout)
        stop_listening = watch.subscribe(client, moving) if client else None
        try:
            # planned.config: precision and runtime as resolved once for the run; workers never resolve them again.
            args = {"config": planned.config, "out_dir": out_dir, "run_id": planned.run_id}
            token = on_rows.set(moving.rows)  # the local engine's shard thread inherits it at submit
            try:
                futures = {task_runner.submit(shard_task, {"shard": s, **args}): s for s in todo}
            finally:
                on_rows.reset(token)
            return _collect(planned, engine, futures, moving, logger)
        except BaseException as exc:
            if client is not None and not isinstance(exc, Exception):  # Ctrl-C, SIGTERM, a Prefect cancellation
                _kill_local_workers(client)
            raise
        finally:
            if stop_listening:
                stop_listening()


def _kill_local_workers(client: Any) -> None:
    """Kill the worker processes of the local Dask cluster this run started, at once.

    On a stop: closing them gracefully waits for the shard each is labelling (seconds to minutes),
    past the grace period a supervisor gives (10 s); a killed shard's output was never published
    (atomic writes), so the rerun labels it again. An existing cluster (--address) is not ours to kill.
    """
    import signal

    cluster = getattr(client, "cluster", None)
    for nanny in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(getattr(nanny, "process", None), "pid", None)
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _collect(planned: Plan, engine: EngineConfig, futures: dict[Any, Shard], moving: watch.Watch, logger: Any) -> list[ShardDone]:
    """Each shard's outcome as it finishes; the run ends early on errors that every shard would meet."""
    done: list[ShardDone] = []
    failed: list[tuple[Shard, BaseException]] = []
    try:
        for future in watch.completed(list(futures), moving, futures.__getitem__):
            shard = futures[future]
            try:
                outcome: ShardDone = future.result()
            except (ModelError, ConfigError, guard.Superseded):
                # The model or a setting is wrong, or another run owns the folder now: every other shard would fail the same way.
                raise
            except Exception as exc:  # this shard only (damaged row group, lost worker...): let the rest finish
                if unreachable(exc):  # the store is down: every other shard would wait out its retries too
                    out = planned.job.out
                    raise outage.StoreUnreachable(outage.paragraph(
                        shard, exc, out.uri, len(done) + len(planned.done), out.show(out.labels),
                        len(futures) - len(done) - len(failed) - 1)) from None
                failed.append((shard, exc))
                continue
            done.append(outcome)
            release = getattr(future.wrapped_future, "release", None)
            if release:  # a Dask future: let the worker drop the result, or a lost worker would redo the shard
                release()
            r = outcome.result
            logger.info("%s: %d rows in %.1f s on %s", shard.name, r.rows, r.seconds, outcome.worker)
    except BaseException:
        _cancel(futures)  # the run is ending: the shards not started yet would fail the same way
        raise
    if failed:
        raise ShardFailed(
            f"{len(failed)} of {len(futures)} shard(s) failed: "
            + "; ".join(_failure(s, e, engine.retries) for s, e in failed)
            + f". The {len(done) + len(planned.done)} finished shard(s) are kept in {planned.job.out.show(planned.job.out.labels)!r}; "
            "fix the cause and run the same command again to label only the missing shards."
        )
    return done


def _warn_unreachable_api(engine: EngineConfig, logger: Any) -> None:
    """Dask workers on other machines cannot report to a Prefect API on this machine's loopback."""
    api = str(PREFECT_API_URL.value() or "")
    if engine.address and _loopback(api) and not _loopback(engine.address):
        logger.warning(
            "The Dask workers at %s report their task runs to the Prefect API at %s, which only this machine can "
            "reach. Run a Prefect server the workers can reach and set PREFECT_API_URL to it (see the README).",
            engine.address,
            api,
        )


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
    Public as `emodraw_flows.label_corpus`: called from a user's own flow, it runs as a subflow
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
def reporting(callback: OnRows | None, job: Job | None = None) -> Iterator[None]:
    """Send the flow's progress (rows labelled) to `callback` and hand it the validated `job`, in this process."""
    tokens = on_rows.set(callback), _job.set(job)
    try:
        yield
    finally:
        on_rows.reset(tokens[0])
        _job.reset(tokens[1])


def start_api() -> str:
    """The Prefect API this run reports to: PREFECT_API_URL, or else Prefect's temporary local server.

    Prefect would start the temporary server itself, but only for this process; starting it
    here gives its URL to the Dask workers too, which would otherwise each start their own.
    """
    if PREFECT_API_URL.value():
        return str(PREFECT_API_URL.value())
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    from emodraw_flows import api

    prestarted = api.url(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    if prestarted:  # launched by the CLI before its own imports (emodraw_flows/api.py)
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
    """Prefect's console handlers without the explained failures (all of them with --verbose), writing to
    this process's stderr as it is now.

    Prefect binds its console handlers to the stderr of the moment its logging was set up; a caller that
    has replaced sys.stderr since (a test runner capturing a command's output, a notebook) would not see
    the run's logs otherwise.
    """
    import sys

    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # Prefect configures its handlers on first use: now, so that there are some to filter
    console = [logging.getLogger(name) for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs")]
    handlers = [h for lg in console for h in lg.handlers if isinstance(h, logging.StreamHandler)]  # not the API's
    ours = [h for h in handlers if isinstance(h, PrefectConsoleHandler)]
    streams = [(h, h.stream, h.console.file) for h in ours]
    for handler in ours:
        handler.stream = handler.console.file = sys.stderr
    quiet = ExplainedFailures()
    for handler in [] if verbose else handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
        for handler, stream, file in streams:
            handler.stream, handler.console.file = stream, file


def execute(job: Job, engine: EngineConfig, on_rows: OnRows | None = None, verbose: bool = False) -> dict[str, Any]:
    """The flow for a validated job, reporting to PREFECT_API_URL or the temporary local API (emodraw_flows/run.py
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


if __name__ != "emodraw_flows.label":
    # Loaded from this file under another name: a deployment's file-path entrypoint
    # (`emodraw_flows/label.py:label_corpus`), which Prefect runs as a stand-alone module `label`.
    # Hand out the package's own flow instead: Prefect sends the flow with each task's context to
    # the Dask workers, which import its module, and only `emodraw_flows.label` exists on all of them.
    from emodraw_flows.label import label_corpus  # noqa: F811
