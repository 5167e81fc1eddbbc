"""The batch job without any orchestrator: validate, plan, label each shard, finish.

`emodraw_flows/` wraps exactly these steps in Prefect tasks; the package itself never
imports Prefect, so it runs and tests on its own (`run`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from emodraw_batch.version import __version__
from emodraw_batch.files import guard, lock
from emodraw_batch.job import resume
from emodraw_batch.analysis import stats
from emodraw_batch.atomic import write_json
from emodraw_batch.config import RunConfig
from emodraw_batch.errors import ConfigError, EmodrawError, OutputError
from emodraw_batch.files.layout import LABELS, STATS, STATS_SUMMARY, Layout, layout
from emodraw_batch.inference.backends import Pending
from emodraw_batch.inference.classifier import EmotionClassifier, Prediction, cached_classifier
from emodraw_batch.inference.token_rows import EncodedIds
from emodraw_batch.inference import language
from emodraw_batch.job.dedup import Repeats, WindowPlan
from emodraw_batch.job.windows import (
    Prepared, detecting_workers, encode_prepared, encode_window, prepare_window, token_bounded,
)
from emodraw_batch.job.plan import Plan, ShardResult, plan
from emodraw_batch.job.prefetch import SerialWorker, prefetch
from emodraw_batch.memory import cap_malloc_arenas, release_freed_memory
from emodraw_batch.files.reader import Shard, read_windows
from emodraw_batch.job.validate import Job, validate
from emodraw_batch.files.writer import AtomicParquetWriter, label_table, output_schema, read_metadata

OnRows = Callable[[int], None]
# Windows read and tokenized ahead of the model (and written behind it); 0 runs all stages inline.
OVERLAP_WINDOWS = 1


@dataclass
class Summary:
    """The end of a run: what the CLI prints and `--json` emits, and what `emodraw_batch.run` returns.

    `rows` labelled (every row, with text or not) in `seconds` (`rows_per_s`); `emotions` counts
    the rows of each top emotion, `shares` is each one's share of the rows with text, `status` counts
    rows by status (ok, null, empty, blank); `repeats` the rows whose text had been labelled before
    in their shard (served that result, not run again; 0 with dedup off); `files` input files read,
    `outputs` label files written (`output_files`: their paths as polars opens them, in shard order).
    """

    rows: int
    seconds: float
    rows_per_s: float
    emotions: dict[str, int]
    shares: dict[str, float]
    status: dict[str, int]
    truncated: int
    files: int
    outputs: int
    resumed: int = 0  # shards a previous run of the same job had finished
    repeats: int = 0  # rows with text served by a copy of their text labelled before in the shard (dedup)
    duplicate_ids: int | None = None  # rows whose --id-column value occurs more than once (never dropped)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    output_dir: str = ""
    output_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classifier_settings(config: RunConfig) -> dict[str, Any]:
    """The EmotionClassifier arguments that `config` decides."""
    return {
        "model": config.model,
        "revision": config.revision,
        "device": config.device,
        "precision": config.precision,
        "runtime": config.runtime,
        "max_length": config.max_length,
        "batch_tokens": config.batch_tokens,
        "allow_pickle": config.allow_pickle,
        "long_texts": config.long_texts,
        "chunk_overlap": config.chunk_overlap,
        "max_chunks": config.max_chunks,
        "chunk_aggregation": config.chunk_aggregation,
    }


def classifier_for(config: RunConfig) -> EmotionClassifier:
    """The process-wide classifier for these settings (loaded once, reused by every shard)."""
    cap_malloc_arenas()  # before the model's threads first allocate
    return cached_classifier(**classifier_settings(config))


class WorkerError(EmodrawError):
    """This worker cannot run the precision or runtime resolved once for every shard of the run."""


def shard_classifier(config: RunConfig) -> EmotionClassifier:
    """The classifier of a shard task, for `Plan.config`: its precision and runtime as given, never resolved here.

    A worker that cannot run them (another kind of device than the machine that planned the run)
    fails its shard with one paragraph, rather than label it some other way.
    """
    try:
        return classifier_for(config)
    except ConfigError as exc:
        raise WorkerError(
            f"This worker ({socket.gethostname()}:{os.getpid()}) cannot run this run's settings: {exc} "
            f"A run labels every shard with one precision ({config.precision}) and runtime ({config.runtime}), "
            "resolved once on the machine that plans it (that is what `auto` and `fast` became there), so that "
            "its shards never mix two ways of labelling. Pass a --precision and --runtime that every worker can run "
            "(--precision fp32 --runtime torch runs on any worker; bf16 with --runtime torch too, slowly on a CPU "
            "without bf16 units), or run the job on workers of one kind."
        ) from None


def label_metadata(config: RunConfig, clf: EmotionClassifier) -> dict[str, Any]:
    """What every output file records: version, model, language detector (when on), settings."""
    detector = language.describe() if config.detects_languages else {}
    return {"emodraw_batch": __version__, **clf.describe(), **detector, "config": config.model_dump(mode="json")}


OnWindow = Callable[[pa.Table, np.ndarray, Prediction], None]


def repeats_for(config: RunConfig) -> Repeats | None:
    """A shard's memory of repeated texts (dedup.py), as `config` sets it; None with dedup off."""
    return Repeats(config.dedup_texts) if config.dedup else None


def label_windows(
    windows: Iterable[pa.Table],
    config: RunConfig,
    clf: EmotionClassifier,
    schema: pa.Schema,
    sink: Callable[[pa.Table], None],
    on_window: OnWindow | None = None,
) -> int:
    """Label `windows` in order and hand each labelled table (`label_table`, in `schema`) to `sink`.

    The one labelling loop: a shard's (`label_shard`, sink = its Parquet writer) and the in-memory
    `classify`'s (sink = a list). The stages overlap (see prefetch.py): a thread reads, cleans and
    tokenizes window k+1 (languages are detected one window earlier, in a thread of their own) while
    the model runs window k and another thread sinks window k-1; on a GPU, window k is queued before
    window k-1's probabilities are collected (`EmotionClassifier.submit`), so the device never waits
    for the host between windows. Order and results are the same as running them one after the other.
    `on_window(table, status, prediction)` runs in the caller's thread once a window's probabilities are in.
    With `config.dedup`, a text repeated in `windows` runs once and its copies get its result (dedup.py).
    Returns how many rows were served by such a repeat.
    """
    repeats = repeats_for(config)
    served = 0
    workers = detecting_workers(config, clf)

    def prepared() -> Iterator[tuple[pa.Table, Prepared]]:
        for table in token_bounded(windows, config):
            yield table, prepare_window(table, config, workers)

    def encoded() -> Iterator[tuple[Any, ...]]:  # (table, *Encoded)
        # With languages, two threads ahead of the model: one reads, cleans and detects (fastText holds
        # the GIL: on a GPU its calls go to `workers` processes, language_pool.py), the other tokenizes
        # (Rust, without the GIL), so detection adds to neither stage's time.
        depth = OVERLAP_WINDOWS if config.detects_languages else 0
        for table, ready in prefetch(prepared(), depth):
            yield table, *encode_prepared(ready, clf, repeats)

    def write(table: pa.Table, status: np.ndarray, prediction: Prediction, langs: language.Rows | None) -> None:
        sink(label_table(table, status, prediction, clf.labels, schema, langs))

    def finish(table: pa.Table, status: np.ndarray, ids: list[list[int]], cut: np.ndarray, langs: Any,
               window: WindowPlan | None, pending: Pending) -> None:
        nonlocal served
        prediction = clf.prediction(ids, cut, pending)  # chunk mode: aggregated from each text's chunks
        if repeats is not None and window is not None:
            prediction = repeats.serve(window, prediction)  # the model's rows -> every row with text
            served += window.repeats
        behind.submit(write, table, status, prediction, langs)
        if on_window:
            on_window(table, status, prediction)

    with SerialWorker(enabled=OVERLAP_WINDOWS > 0) as behind:
        # On a GPU, one window in flight: window k is queued on the device before window k-1 is
        # collected, post-processed and handed to the sink, so the GPU runs k while the host
        # finishes k-1. Elsewhere submit() returns when done, and holding a window back gains nothing.
        in_flight: tuple[Any, ...] | None = None
        for table, status, ids, cut, langs, window in prefetch(encoded(), OVERLAP_WINDOWS):
            pending = clf.submit(ids)
            if in_flight is not None:
                finish(*in_flight)
            in_flight = (table, status, ids, cut, langs, window, pending)
            if pending.done is None:
                finish(*in_flight)
                in_flight = None
        if in_flight is not None:
            finish(*in_flight)
    return served


def head_start_behind(job: Job) -> EmotionClassifier | None:
    """Run the model on the first window of the first unfinished shard, in memory, in a thread of its
    own, from now until that shard's task submits its first window.

    For the seconds before the orchestrator can start the shard tasks (importing Prefect, its
    temporary server starting, the flow run and its first tasks): nothing is written; when that
    shard's task runs in this process, its first `submit` stops the thread and takes the batches
    already done (`EmotionClassifier.head_start_behind`), so the output is exactly the same. The
    first window is read and tokenized twice for it (milliseconds per thousand rows, against seconds
    of model time gained). Only a speed-up: an error in the thread (a damaged row group, say) only
    ends it, and the shard's own task meets, retries and reports it. Returns the classifier (call its
    `end_head_start` once the flow is over, in case no shard ever submitted), None with nothing to label.
    """
    shard = next((s for s in job.shards if s.name not in job.finished), None)
    if shard is None:
        return None
    clf = classifier_for(job.resolved)  # as the shard tasks will load it (Plan.config); its errors are the run's

    def first_window_ids() -> EncodedIds:  # in the thread: what the shard's first window sends to the model
        table = next(read_windows(shard, job.config.window_rows))
        # With dedup, the shard's first window sends only its first copies: encode it the same way.
        return encode_window(table, job.config, clf, repeats_for(job.config))[1]

    clf.head_start_behind(first_window_ids)
    return clf


def label_shard(
    shard: Shard,
    config: RunConfig,
    out_dir: str | Path | Layout,
    on_rows: OnRows | None = None,
    classifier: EmotionClassifier | None = None,
    run_id: str | None = None,
) -> ShardResult:
    """Label one shard into `out_dir/labels/<shard.name>`, streaming window by window (`label_windows`).

    With `run_id` (the plan's), the file is published only if that run still owns the folder
    (files/guard.py); otherwise it raises guard.Superseded and leaves nothing behind.
    """
    clf = classifier or classifier_for(config)
    started = time.perf_counter()  # labelling time: the (cached) model load is start-up, not this shard
    emotions = np.zeros(len(clf.labels), dtype=np.int64)
    statuses: Counter[str] = Counter()
    truncated = 0
    windows = read_windows(shard, config.window_rows)
    first = next(windows)  # always one table, empty for a zero-row shard: its schema shapes the output
    schema = output_schema(first.schema, clf.columns, label_metadata(config, clf), config.detects_languages)

    def count(table: pa.Table, status: np.ndarray, prediction: Prediction) -> None:
        nonlocal truncated
        emotions[:] += np.bincount(prediction.probs.argmax(axis=1), minlength=len(clf.labels))
        kinds, counts = np.unique(status.astype(str), return_counts=True)
        statuses.update(dict(zip(kinds.tolist(), counts.tolist())))
        truncated += int(prediction.truncated.sum())
        if on_rows:
            on_rows(table.num_rows)

    out = layout(out_dir)
    check = guard.publishing(out, run_id, f"shard {shard.name}")
    with AtomicParquetWriter(out.labels, shard.name, schema, out.fs, check) as writer:
        repeats = label_windows(itertools.chain([first], windows), config, clf, schema, writer.write, count)
        writer.counts["repeats"] = repeats  # in the file's footer: a resumed run reports it (plan.result_from_file)
    # And this thread's, between shards: each shard's peak would land on top of the last one's
    # leftovers (+50 MiB over 6 shards of 50k rows before; tests/test_memory.py).
    release_freed_memory()
    emotions_found = {label: int(c) for label, c in zip(clf.labels, emotions) if c}
    return ShardResult(
        output=f"{LABELS}/{shard.name}",
        input=shard.path,
        row_groups=(shard.start, shard.stop),
        rows=writer.rows,
        emotions=emotions_found,
        status=dict(statuses),
        truncated=truncated,
        seconds=time.perf_counter() - started,
        repeats=repeats,
    )


def summarize(plan: Plan, results: list[ShardResult], seconds: float) -> Summary:
    emotions: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for r in results:
        emotions.update(r.emotions)
        statuses.update(r.status)
    rows = sum(r.rows for r in results)
    labelled = sum(emotions.values())
    inputs, out = plan.job.inputs, plan.job.out
    return Summary(
        rows=rows,
        seconds=round(seconds, 3),
        rows_per_s=round(rows / seconds, 1) if seconds > 0 else 0.0,
        emotions=dict(emotions.most_common()),
        shares={k: round(v / labelled, 4) for k, v in emotions.most_common()} if labelled else {},
        status=dict(statuses),
        truncated=sum(r.truncated for r in results),
        repeats=sum(r.repeats for r in results),
        files=len(inputs.files),
        outputs=len(results),
        resumed=len(plan.done),
        skipped_files=inputs.skipped,
        output_dir=plan.job.out.uri,
        output_files=[out.url(out.join(r.output)) for r in results],
    )


def count_duplicates(out: Layout, id_column: str) -> int:
    """Rows whose id is not unique, computed lazily by polars over the written labels."""
    import polars as pl

    if not out.shard_files():
        return 0
    frame = stats.scan_labels(out).select(pl.col(id_column).is_duplicated().sum()).collect()
    return int(frame.item())


def written_model(out: Layout) -> dict[str, Any]:
    """The model description stored in an output file: a rerun with nothing left to label loads no model."""
    metadata = read_metadata(out.shard_files()[0], out.fs)
    # describe()'s keys: not the version and settings, the detector's, or the writer's column names
    others = ("emodraw_batch", "config", "language_model", "language_rule", "output_columns", "columns")
    return {k: v for k, v in metadata.items() if k not in others}


def _check_no_strays(job: Job) -> None:
    """labels/ holds exactly the planned shards: a late file from another run would add or mix rows."""
    stray = resume.unplanned(job.out, job.shards)
    if stray:
        raise OutputError(
            f"The output in {job.out.uri!r} holds label files that this run did not plan "
            f"({', '.join(job.out.show(p) for p in stray[:5])}{' ...' if len(stray) > 5 else ''}): written by a task "
            "of another run that was still running, they would add duplicated rows or labels of other settings. "
            "No manifest was written. Make sure no earlier run's tasks are still running (on a Dask cluster: "
            "restart its workers), then run the same command again: planning removes such files."
        )


def finish(
    plan: Plan,
    results: list[ShardResult],
    seconds: float,
    model: dict[str, Any] | None = None,
    engine: dict[str, Any] | None = None,
    run_date: str | None = None,
) -> Summary:
    """Merge with resumed shards, check rows in = rows out, write the manifest and statistics.

    `model` is the description of the classifier that labelled `results`; without one (every
    shard was done before) it is read from the output files. `engine` is what ran the shards
    (recorded as given, for the reader of the manifest). `run_date` is the day a scheduled run
    stands for (its `{date}`), which `trend` orders runs by; the manifest also says when it was written.
    """
    job = plan.job
    guard.check(job.out, plan.run_id, "the manifest")  # first: labels/ and its temporary files may be another run's now
    results = sorted([*plan.done.values(), *results], key=lambda r: r.output)
    expected = {s.name: s.rows for s in job.shards}
    got = {Path(r.output).name: r.rows for r in results}
    if got != expected:
        raise OutputError(
            f"Row count check failed: planned {expected} but wrote {got}. The output in {job.out.uri!r} "
            "is incomplete; rerun the same command."
        )
    resume.remove_temp_files(job.out)  # left by a worker that died mid-shard (its shard was redone)
    _check_no_strays(job)
    summary = summarize(plan, results, seconds)
    if job.config.id_column:
        summary.duplicate_ids = count_duplicates(job.out, job.config.id_column)
    manifest = {
        "emodraw_batch": __version__,
        "inputs": [{"path": f.path, "rows": f.num_rows, "row_groups": len(f.row_groups)} for f in job.inputs.files],
        "skipped_files": job.inputs.skipped,
        "config": job.config.model_dump(mode="json"),
        "engine": engine or {"engine": "local"},
        "fingerprint": job.record["fingerprint"],
        "model": model if model is not None else written_model(job.out),
        "outputs": [asdict(r) for r in results],
        "summary": summary.to_dict(),
        "stats": f"{STATS}/{STATS_SUMMARY}",
        "run_date": run_date,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(job.out.manifest, manifest, job.out.fs)
    stats.write_stats(job.out, job.config)
    return summary


def run(
    specs: Sequence[str],
    out_dir: str | Path,
    config: RunConfig,
    overwrite: bool = False,
    on_rows: OnRows | None = None,
) -> Summary:
    """Validate, plan, label every unfinished shard in this process, finish (the flow's steps, without Prefect)."""
    started = time.perf_counter()
    job = validate(specs, out_dir, config, overwrite)
    with lock.held(job.out):
        planned = plan(job)
        if not planned.todo:
            return finish(planned, [], time.perf_counter() - started)
        clf = shard_classifier(planned.config)
        results = [label_shard(s, planned.config, job.out, on_rows, clf, planned.run_id) for s in planned.todo]
        return finish(planned, results, time.perf_counter() - started, clf.describe())
