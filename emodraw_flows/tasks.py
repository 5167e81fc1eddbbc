"""The flow's Prefect tasks: plan the shards, label one shard, finish.

Apart from `emodraw_flows/label.py` so that Dask workers always find them under this module's
name. A deployment loads the flow from its file (`emodraw_flows/label.py:label_corpus`), which
Prefect runs as a stand-alone module (`label`), not as part of this package; tasks defined there
would be pickled as `label._label_shard`, which no worker can import as the package it is (their
import failed at `from . import ...`, and every worker died). Defined here, they are pickled by
reference to `emodraw_flows.tasks`, which every worker with emodraw-batch installed imports,
however the flow itself was loaded. The tasks are thin: all the work is `emodraw_batch.job.runner`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from emodraw_batch.config import RunConfig
from emodraw_batch.errors import EmodrawError
from emodraw_batch.files.reader import Shard
from emodraw_batch.inference.classifier import load_count
from emodraw_batch.job import runner
from emodraw_batch.job.plan import Plan, ShardResult, plan
from emodraw_batch.job.validate import Job
from emodraw_flows import outage
from emodraw_flows.settings import EngineConfig

OnRows = Callable[[int], None]

# Rows labelled, window by window: the caller's progress callback, in the process that runs the flow.
# It never travels as a flow or task parameter (it is not data); the local engine's task thread
# inherits it. On a Dask worker it is unset, and a shard reports to the flow through the scheduler.
on_rows: ContextVar[OnRows | None] = ContextVar("emodraw_on_rows", default=None)
# The Dask event topic of those reports (emodraw_flows/watch.py listens to it).
PROGRESS_TOPIC = "emodraw-progress"


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


def _reporter(shard: Shard) -> OnRows | None:
    """Where this shard reports each labelled window: the flow's callback here, or the Dask scheduler."""
    local = on_rows.get()
    if local is not None:
        return local
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # neither in the flow's process nor on a Dask worker
        return None
    return lambda rows: worker.log_event(PROGRESS_TOPIC, {"shard": shard.name, "rows": rows})


def _label_shard(shard: Shard, config: RunConfig, out_dir: str, run_id: str | None = None) -> ShardDone:
    """Label one shard into out_dir/labels/ with this process's cached model; published only while `run_id` owns it."""
    from prefect.runtime import task_run

    with outage.watching(shard, first_attempt=task_run.run_count <= 1):
        clf = runner.shard_classifier(config)  # loaded on first use in this process, then reused
        result = runner.label_shard(shard, config, out_dir, on_rows=_reporter(shard), classifier=clf, run_id=run_id)
    loads = load_count(**runner.classifier_settings(config))
    return ShardDone(result, clf.describe(), f"{socket.gethostname()}:{os.getpid()}", loads)


# Not a decorator: the function keeps its own module-level name, so Dask pickles it by
# reference (workers import emodraw_flows.tasks) instead of by value with this module's globals.
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
