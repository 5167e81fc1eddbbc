"""Plan a checked job, once: claim the output folder and find the shards an earlier run finished.

This is the first step that writes (run.json; --overwrite clears the folder; broken
outputs, stale temporary files and label files the plan does not name are removed). The flow runs
it once per run, under the folder's lock; the run's id (the lock's token) goes into run.json.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

import pyarrow.compute as pc
import pyarrow.parquet as pq

from emodraw_batch.config import RunConfig
from emodraw_batch.files import lock
from emodraw_batch.job import resume
from emodraw_batch.files.layout import LABELS, Layout
from emodraw_batch.files.reader import Shard
from emodraw_batch.files.writer import read_counts, read_metadata, written_names
from emodraw_batch.job.validate import Job


@dataclass
class ShardResult:
    """What a shard task returns: where its output is and small counts, never data."""

    output: str
    input: str
    row_groups: tuple[int, int]
    rows: int
    emotions: dict[str, int]
    status: dict[str, int]
    truncated: int
    seconds: float
    repeats: int = 0  # rows served by a text labelled before in the shard (dedup; runner.label_windows)


@dataclass(frozen=True)
class Plan:
    """A job whose folder is claimed; `done` holds the shards an earlier (crashed) run completed.

    `run_id` is this run's id in run.json: each shard and the manifest check it before they are
    published (files/guard.py).
    """

    job: Job
    run_id: str
    done: dict[str, ShardResult] = field(default_factory=dict)

    @property
    def config(self) -> RunConfig:
        """What every shard task runs with: the job's settings, precision and runtime resolved once (validate)."""
        return self.job.resolved

    @property
    def todo(self) -> list[Shard]:
        return [s for s in self.job.shards if s.name not in self.done]


def result_from_file(shard: Shard, out: Layout) -> ShardResult:
    """Rebuild a finished shard's counts from its output file (a resumed run reports whole-job numbers)."""
    path = out.shard(shard.name)
    names = written_names(read_metadata(path, out.fs))  # ours may be emodraw_<name> beside an input column
    wanted = {name: names.get(name, name) for name in ("emotion", "status", "truncated")}
    read = pq.read_table(path, columns=list(wanted.values()), filesystem=out.fs)
    table = read.rename_columns(list(wanted))
    emotions = Counter(e for e in table["emotion"].to_pylist() if e is not None)
    return ShardResult(
        output=f"{LABELS}/{shard.name}",
        input=shard.path,
        row_groups=(shard.start, shard.stop),
        rows=table.num_rows,
        emotions=dict(emotions),
        status=dict(Counter(table["status"].to_pylist())),
        truncated=int(pc.sum(table["truncated"]).as_py() or 0),
        seconds=0.0,
        repeats=read_counts(path, out.fs).get("repeats", 0),
    )


def plan(job: Job) -> Plan:
    """Claim the folder for `job`; keep complete shard outputs, remove broken ones and those of no planned shard.
    Call it holding the lock.

    The folder is checked again first (validate checked it before the lock): another job may have
    run there since, and its run.json and shards must not be taken over.
    """
    resume.check(job.out, job.record, job.overwrite)
    # The lock's token (held by the caller): on an object store the lease names it too. A fresh id
    # where no lock is held here (a plan outside `lock.held`).
    run_id = lock.token(job.out) or uuid.uuid4().hex
    resume.claim(job.out, {**job.record, "run_id": run_id}, job.overwrite)
    resume.remove_unplanned(job.out, job.shards)
    done = {}
    for shard in job.shards:
        if resume.complete(job.out, shard, job.record["fingerprint"]):
            done[shard.name] = result_from_file(shard, job.out)
        else:
            resume.discard(job.out, shard)
    return Plan(job, run_id, done)
