"""Make a rerun of the same job resume, and refuse to mix different jobs in one folder.

`DIR/run.json` records what the folder holds (the settings that change labels,
and the inputs) as soon as a run starts. A rerun with the same record skips
every shard whose output file is complete (footer reads, row count matches the
plan, its metadata names this job's settings) and redoes the rest; a different
record is an error unless --overwrite.

`run.json` also holds the id of the run that owns the folder now (`run_id`, files/guard.py): every
shard checks it before its final move, so a task of an earlier run that outlived its lock (still
running on a cluster after its main process died) publishes nothing into a later run's folder.

`check`, `complete` and `unplanned` only read; `claim`, `discard` and `remove_unplanned` write
(planning calls them).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq

from emodraw_batch.atomic import write_json
from emodraw_batch.config import RunConfig
from emodraw_batch.errors import OutputError
from emodraw_batch.files.layout import RUN_FILE, WRITTEN, Layout
from emodraw_batch.files.reader import Inputs, Shard
from emodraw_batch.files.writer import METADATA_KEY, OUTPUT_COLUMNS


def fingerprint(config: RunConfig) -> dict[str, Any]:
    """The settings that change the labels, from `config` as `validate.resolve` made it.

    Precision `auto` or `fast` is resolved there, for the machine that plans the run. Unresolved, a
    job that crashed on a GPU (auto = bf16) and is rerun on a CPU (auto = fp32) would resume as
    "the same job" and mix two precisions in one output folder.
    """
    return {**config.fingerprint(), "output_columns": OUTPUT_COLUMNS}


def job_record(inputs: Inputs, config: RunConfig, shards: list[Shard]) -> dict[str, Any]:
    """What must be equal for two runs to share one output folder."""
    return {
        "fingerprint": fingerprint(config),
        "inputs": [{"path": f.path, "rows": f.num_rows, **f.stamp} for f in inputs.files],
        "shards": {s.name: s.rows for s in shards},
    }


# What tells two versions of an input file apart (reader._stamp); rows too. A key only one of the two
# records has (run.json of an older version, another kind of store) is not compared.
_STAMP = ("rows", "size", "etag", "mtime")


def _changed_input(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> str | None:
    for before, now in zip(old, new):
        keys = [k for k in _STAMP if k in before and k in now and before[k] != now[k]]
        if keys:
            what = ", ".join(f"{k} {before[k]!r} before, {now[k]!r} now" for k in keys)
            return (
                f"input file {now['path']!r} was changed in place since this output was started ({what}); "
                "its old and new rows must not be mixed"
            )
    return None


# Settings that joined the fingerprint later, and what a run.json written without them did: such a
# job resumes with that value (and is another job with the other one).
# Before issue 38: detected rows were skipped on the best guess's own score (no language_skip_below),
# no input column decided a language (an input `lang` was refused), and the output columns were `score`,
# `lang` and `lang_score` (output_columns 1).
_BEFORE_KEY = {
    "dedup": False, "languages": "any", "long_texts": "truncate", "language_skip_below": None,
    "language_column": None, "output_columns": 1,
}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    before = {**_BEFORE_KEY, **old.get("fingerprint", {})}
    diffs = [
        f"{key}: {before.get(key)!r} before, {value!r} now" for key, value in new["fingerprint"].items() if before.get(key) != value
    ]
    old_inputs = old.get("inputs") or []
    changed = _changed_input(old_inputs, new["inputs"])
    if [i.get("path") for i in old_inputs] != [i["path"] for i in new["inputs"]]:
        diffs.append("the input files or their row counts differ")
    elif changed:
        diffs.append(changed)
    elif old.get("shards") != new["shards"]:
        diffs.append("the shards differ (was --shard-rows changed?)")
    return diffs


def check(out: Layout, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse a folder that holds another job's output (unless --overwrite). Writes nothing."""
    if overwrite:
        return
    if out.is_file(out.run_file):
        diffs = _differences(out.read_json(out.run_file), record)
        if diffs:
            raise OutputError(
                f"Output folder {out.uri!r} holds the output of a different job ({'; '.join(diffs)}). "
                "Mixing them would give inconsistent labels. Use another --output folder, or pass --overwrite "
                "to delete the old output and start again."
            )
    elif out.shard_files():
        raise OutputError(
            f"Output folder {out.uri!r} already has labels/ files but no {RUN_FILE}, so it is "
            "unknown which job wrote them. Use another --output folder, or pass --overwrite to replace them."
        )


# Where a shard file's metadata (runner.label_shard) holds each setting of the fingerprint: the settings
# it was labelled with, under "config", except those listed here. Every key of the fingerprint is
# compared, so a setting added to the fingerprint (and so to the settings) is checked with no edit here.
_SHARD_VALUE: dict[str, tuple[str, ...]] = {
    "precision": ("precision",),  # what ran, as the classifier describes it (older shards' settings say "auto")
    "output_columns": ("output_columns",),  # the naming of the added columns (writer.OUTPUT_COLUMNS)
}
_MISSING = object()


def _json(value: Any) -> Any:
    """A value as its JSON text reads back (tuples as lists), to compare settings with metadata."""
    return json.loads(json.dumps(value, default=str))


def shard_differences(metadata: dict[str, Any], fingerprint: dict[str, Any]) -> list[str]:
    """The fingerprint settings a shard file's metadata does not match (a missing one counts)."""
    diffs = []
    for key, value in fingerprint.items():
        found: Any = metadata
        for part in _SHARD_VALUE.get(key, ("config", key)):
            found = found.get(part, _MISSING) if isinstance(found, dict) else _MISSING
        if found is _MISSING:  # a file written before the setting existed was labelled the old way
            found = _BEFORE_KEY.get(key, _MISSING)
        if found is _MISSING or _json(found) != _json(value):
            written = "missing" if found is _MISSING else repr(found)
            diffs.append(f"{key}: {written} in the file, {value!r} in this job")
    return diffs


def complete(out: Layout, shard: Shard, fingerprint: dict[str, Any]) -> bool:
    """A finished output of this job: its footer reads, it holds exactly the planned rows, and its
    metadata says it was labelled with this job's settings (`shard_differences`).

    Row counts alone would keep a file another job wrote (another model, precision...) as resumed.
    """
    path = out.shard(shard.name)
    if not out.is_file(path):
        return False
    try:
        footer = pq.read_metadata(path, filesystem=out.fs)
        metadata = json.loads(footer.metadata[METADATA_KEY])
    except Exception:  # any unreadable footer or metadata means the file must be redone
        return False
    return footer.num_rows == shard.rows and isinstance(metadata, dict) and not shard_differences(metadata, fingerprint)


def clear(out: Layout, keep: tuple[str, ...] = ()) -> None:
    """Remove everything a run writes (for --overwrite), and nothing else (nor the names in `keep`)."""
    for name in WRITTEN:
        if name not in keep:
            out.remove(out.join(name))


def claim(out: Layout, record: dict[str, Any], overwrite: bool) -> None:
    """Take the folder for this job: run.json is written, --overwrite clears the rest, stale temp files go.

    run.json (with this run's id) first: from then on, a task of an earlier run checks it and
    publishes nothing (files/guard.py), so nothing of that run lands in what is cleared here.
    """
    if not out.remote:  # an object store has no folders to create
        out.fs.create_dir(out.root)
    write_json(out.run_file, record, out.fs)
    if overwrite:
        clear(out, keep=(RUN_FILE,))
    remove_temp_files(out)


def remove_temp_files(out: Layout) -> None:
    """Remove the hidden temporary files (objects) of writers that died: a crashed run, a killed Dask worker.

    Safe only while this run holds the folder's lock (lock.py): then no other writer exists.
    """
    for stale in out.temp_files(out.labels):
        out.remove(stale)


def unplanned(out: Layout, shards: list[Shard]) -> list[str]:
    """Files in labels/ that no shard of the plan names: published late by a run that no longer owns the folder."""
    names = {out.shard(s.name) for s in shards}
    return [f.path for f in out.files(out.labels) if not f.base_name.startswith(".") and f.path not in names]


def remove_unplanned(out: Layout, shards: list[Shard]) -> None:
    """Remove the files in labels/ that the plan does not name (safe only under the folder's lock)."""
    for stray in unplanned(out, shards):
        out.remove(stray)


def discard(out: Layout, shard: Shard) -> None:
    """Remove a shard's broken or partial output, so that it is redone from scratch."""
    out.remove(out.shard(shard.name))
