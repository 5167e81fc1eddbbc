"""Make a rerun of the same job resume, and refuse to mix different jobs in one folder.

`DIR/run.json` records what the folder holds (the settings that change labels,
and the inputs) as soon as a run starts. A rerun with the same record skips
every shard whose output file is complete (footer reads, row count matches the
plan) and redoes the rest; a different record is an error unless --overwrite.

`run.json` also holds the id of the run that owns the folder now (`run_id`, files/guard.py): every
shard checks it before its final move, so a task of an earlier run that outlived its lock (still
running on a cluster after its main process died) publishes nothing into a later run's folder.

`check`, `complete` and `unplanned` only read; `claim`, `discard` and `remove_unplanned` write
(planning calls them).
"""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from emodraw_batch.atomic import write_json
from emodraw_batch.config import RunConfig
from emodraw_batch.errors import OutputError
from emodraw_batch.files.layout import RUN_FILE, WRITTEN, Layout
from emodraw_batch.files.reader import Inputs, Shard


def fingerprint(config: RunConfig) -> dict[str, Any]:
    """The settings that change the labels, with precision `auto` or `fast` resolved for this machine.

    Unresolved, a job that crashed on a GPU (auto = bf16) and is rerun on a CPU (auto = fp32)
    would resume as "the same job" and mix two precisions in one output folder.
    """
    from emodraw_batch.inference.device import resolve_device, resolve_precision

    values = config.fingerprint()
    if config.precision in ("auto", "fast"):  # both mean something different on another machine
        # Only device `auto` needs torch (to look for a GPU); a named device decides by its name.
        device = resolve_device("auto") if config.device == "auto" else config.device
        values["precision"] = resolve_precision(config.precision, device)
    return values


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
_BEFORE_KEY = {"dedup": False, "languages": "any"}


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


def complete(out: Layout, shard: Shard) -> bool:
    """A finished output: its footer reads and it holds exactly the planned rows."""
    path = out.shard(shard.name)
    if not out.is_file(path):
        return False
    try:
        return pq.read_metadata(path, filesystem=out.fs).num_rows == shard.rows
    except Exception:  # any unreadable footer means the file must be redone
        return False


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
