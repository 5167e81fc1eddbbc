"""The batch job without any orchestrator: plan shards, label each one, finish.

`flows/` wraps exactly these three steps in Prefect tasks; the package itself
never imports Prefect, so it runs and tests on its own.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__, resume, stats
from .config import RunConfig
from .errors import InputError, OutputError
from .layout import STATS, STATS_SUMMARY
from .model import EmotionClassifier, Prediction, cached_classifier, resolve_device, resolve_precision
from .prefetch import SerialWorker, prefetch
from .reader import Inputs, Shard, plan_shards, read_windows, scan
from .text import OK, prepare
from .atomic import write_json
from .writer import ADDED, AtomicParquetWriter, label_table, output_schema

OnRows = Callable[[int], None]
# Windows read and tokenized ahead of the model (and written behind it); 0 runs all stages inline.
OVERLAP_WINDOWS = 1




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


@dataclass(frozen=True)
class Plan:
    """What a run will do: the validated inputs, all their shards, and which are already done.

    `done` holds the results of shards whose output file a previous (crashed) run
    of the same job left complete; only `todo` needs to run.
    """

    inputs: Inputs
    shards: list[Shard]
    out_dir: Path
    config: RunConfig
    done: dict[str, ShardResult] = field(default_factory=dict)

    @property
    def todo(self) -> list[Shard]:
        return [s for s in self.shards if s.name not in self.done]


@dataclass
class Summary:
    """The end-of-run numbers that the CLI prints and `--json` emits."""

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
    duplicate_ids: int | None = None  # rows whose --id-column value occurs more than once (never dropped)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    output_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classifier_for(config: RunConfig) -> EmotionClassifier:
    """The process-wide classifier for these settings (loaded once, reused by every shard)."""
    return cached_classifier(
        model=config.model,
        revision=config.revision,
        device=config.device,
        precision=config.precision,
        max_length=config.max_length,
        batch_tokens=config.batch_tokens,
        allow_pickle=config.allow_pickle,
    )


def job_fingerprint(config: RunConfig) -> dict[str, Any]:
    """The settings that change the labels, with precision `auto` resolved for this machine.

    Unresolved, a job that crashed on a GPU (auto = bf16) and is rerun on a CPU (auto = fp32)
    would resume as "the same job" and mix two precisions in one output folder.
    """
    fingerprint = config.fingerprint()
    if config.precision == "auto":
        # Only device `auto` needs torch (to look for a GPU); a named device decides by its name.
        device = resolve_device("auto") if config.device == "auto" else config.device
        fingerprint["precision"] = resolve_precision("auto", device)
    return fingerprint


def _check_output_dir(out_dir: Path, inputs: Inputs) -> None:
    out = out_dir.absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"Output {str(out_dir)!r} is a file; pass a folder with --output DIR.")
    for f in inputs.files:
        if "://" in f.path:
            continue
        source = Path(f.path).absolute()
        if source == out or out in source.parents:
            raise OutputError(
                f"Input file {f.path!r} lies inside the output folder {str(out_dir)!r}; outputs would mix with "
                "inputs. Choose an output folder outside the input folders."
            )


def plan(specs: Sequence[str], out_dir: str | Path, config: RunConfig, overwrite: bool = False) -> Plan:
    """Validate every input (before any model loads), cut the corpus into shards, find finished ones."""
    inputs = scan(
        specs,
        config.text_column,
        id_column=config.id_column,
        cast_text=config.cast_text,
        skip_bad_files=config.skip_bad_files,
    )
    out = Path(out_dir)
    _check_output_dir(out, inputs)
    clash = [c for f in inputs.files for c in f.schema.names if c in ADDED or c.startswith("prob_")]
    if clash:
        raise InputError(
            f"Input columns {sorted(set(clash))} clash with the output columns emodraw-batch adds "
            f"({', '.join(ADDED)}, prob_<label>). Rename them in the input, or drop them before labelling."
        )
    stats.check_options(inputs.schema, config.group_by, config.time_column, config.every)
    shards = plan_shards(inputs, config.shard_rows)
    finished = resume.start(out, resume.job_record(inputs, job_fingerprint(config), shards), shards, overwrite)
    return Plan(inputs, shards, out, config, {s.name: _result_from_file(s, out) for s in finished})


def _result_from_file(shard: Shard, out_dir: Path) -> ShardResult:
    """Rebuild a finished shard's counts from its output file (a resumed run reports whole-job numbers)."""
    table = pq.read_table(out_dir / "labels" / shard.name, columns=["emotion", "status", "truncated"])
    emotions = Counter(e for e in table["emotion"].to_pylist() if e is not None)
    return ShardResult(
        output=f"labels/{shard.name}",
        input=shard.path,
        row_groups=(shard.start, shard.stop),
        rows=table.num_rows,
        emotions=dict(emotions),
        status=dict(Counter(table["status"].to_pylist())),
        truncated=int(pc.sum(table["truncated"]).as_py() or 0),
        seconds=0.0,
    )


def label_shard(
    shard: Shard,
    config: RunConfig,
    out_dir: str | Path,
    on_rows: OnRows | None = None,
    classifier: EmotionClassifier | None = None,
) -> ShardResult:
    """Label one shard into `out_dir/labels/<shard.name>`, streaming window by window.

    Three stages overlap (see prefetch.py): a thread reads, cleans and tokenizes window
    k+1 while this thread runs the model on window k and another writes window k-1.
    Order and results are the same as running them one after the other.
    """
    clf = classifier or classifier_for(config)
    started = time.perf_counter()  # labelling time: the (cached) model load is start-up, not this shard
    emotions = np.zeros(len(clf.labels), dtype=np.int64)
    statuses: Counter[str] = Counter()
    truncated = 0
    metadata = {"emodraw_batch": __version__, **clf.describe(), "config": config.model_dump(mode="json")}
    windows = read_windows(shard, config.window_rows)
    first = next(windows)  # always one table, empty for a zero-row shard: its schema shapes the output
    schema = output_schema(first.schema, clf.columns, metadata)

    def encoded() -> Iterator[tuple[pa.Table, np.ndarray, list[list[int]], np.ndarray]]:
        for table in itertools.chain([first], windows):
            column = table[config.text_column]
            if config.cast_text and not pa.types.is_string(column.type):
                column = column.cast(pa.string())
            texts, status = prepare(column)
            ids, cut = clf.encode([texts[i] for i in np.flatnonzero(status == OK)])
            yield table, status, ids, cut

    def write(table: pa.Table, status: np.ndarray, prediction: Prediction) -> None:
        writer.write(label_table(table, status, prediction, clf.labels, schema))

    with AtomicParquetWriter(Path(out_dir) / "labels", shard.name, schema) as writer:
        with SerialWorker(enabled=OVERLAP_WINDOWS > 0) as behind:
            for table, status, ids, cut in prefetch(encoded(), OVERLAP_WINDOWS):
                n_tokens = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
                prediction = Prediction(clf.forward(ids), n_tokens, cut)
                behind.submit(write, table, status, prediction)
                emotions += np.bincount(prediction.probs.argmax(axis=1), minlength=len(clf.labels))
                kinds, counts = np.unique(status.astype(str), return_counts=True)
                statuses.update(dict(zip(kinds.tolist(), counts.tolist())))
                truncated += int(cut.sum())
                if on_rows:
                    on_rows(table.num_rows)
    emotions_found = {label: int(c) for label, c in zip(clf.labels, emotions) if c}
    return ShardResult(
        output=f"labels/{shard.name}",
        input=shard.path,
        row_groups=(shard.start, shard.stop),
        rows=writer.rows,
        emotions=emotions_found,
        status=dict(statuses),
        truncated=truncated,
        seconds=time.perf_counter() - started,
    )


def summarize(plan: Plan, results: list[ShardResult], seconds: float) -> Summary:
    emotions: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for r in results:
        emotions.update(r.emotions)
        statuses.update(r.status)
    rows = sum(r.rows for r in results)
    labelled = sum(emotions.values())
    return Summary(
        rows=rows,
        seconds=round(seconds, 3),
        rows_per_s=round(rows / seconds, 1) if seconds > 0 else 0.0,
        emotions=dict(emotions.most_common()),
        shares={k: round(v / labelled, 4) for k, v in emotions.most_common()} if labelled else {},
        status=dict(statuses),
        truncated=sum(r.truncated for r in results),
        files=len(plan.inputs.files),
        outputs=len(results),
        resumed=len(plan.done),
        skipped_files=plan.inputs.skipped,
        output_dir=str(plan.out_dir),
    )


def count_duplicates(labels: Path, id_column: str) -> int:
    """Rows whose id is not unique, computed lazily by polars over the written labels."""
    import polars as pl

    if not any(labels.glob("*.parquet")):
        return 0
    frame = pl.scan_parquet(labels / "*.parquet").select(pl.col(id_column).is_duplicated().sum()).collect()
    return int(frame.item())


def finish(plan: Plan, results: list[ShardResult], seconds: float, model: dict[str, Any]) -> Summary:
    """Merge with resumed shards, check rows in = rows out, write the manifest, return the summary."""
    results = sorted([*plan.done.values(), *results], key=lambda r: r.output)
    expected = {s.name: s.rows for s in plan.shards}
    got = {Path(r.output).name: r.rows for r in results}
    if got != expected:
        raise OutputError(
            f"Row count check failed: planned {expected} but wrote {got}. The output in {str(plan.out_dir)!r} "
            "is incomplete; rerun the same command."
        )
    summary = summarize(plan, results, seconds)
    if plan.config.id_column:
        summary.duplicate_ids = count_duplicates(plan.out_dir / "labels", plan.config.id_column)
    manifest = {
        "emodraw_batch": __version__,
        "inputs": [{"path": f.path, "rows": f.num_rows, "row_groups": len(f.row_groups)} for f in plan.inputs.files],
        "skipped_files": plan.inputs.skipped,
        "config": plan.config.model_dump(mode="json"),
        "fingerprint": job_fingerprint(plan.config),
        "model": model,
        "outputs": [asdict(r) for r in results],
        "summary": summary.to_dict(),
        "stats": f"{STATS}/{STATS_SUMMARY}",
    }
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(plan.out_dir / "manifest.json", manifest)
    stats.write_stats(plan.out_dir, plan.config)
    return summary


def run(
    specs: Sequence[str],
    out_dir: str | Path,
    config: RunConfig,
    overwrite: bool = False,
    on_plan: Callable[[Plan], None] | None = None,
    on_rows: OnRows | None = None,
) -> Summary:
    """Plan, label every unfinished shard in this process, finish. The Prefect flow runs the same steps."""
    started = time.perf_counter()
    job = plan(specs, out_dir, config, overwrite)
    if on_plan:
        on_plan(job)
    clf = classifier_for(config)
    results = [label_shard(s, config, out_dir, on_rows, clf) for s in job.todo]
    return finish(job, results, time.perf_counter() - started, clf.describe())
