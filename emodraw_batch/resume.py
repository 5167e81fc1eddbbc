"""Make a rerun of the same job resume, and refuse to mix different jobs in one folder.

`DIR/run.json` records what the folder holds (the settings that change labels,
and the inputs) as soon as a run starts. A rerun with the same record skips
every shard whose output file is complete (footer reads, row count matches the
plan) and redoes the rest; a different record is an error unless --overwrite.

`check` and `complete` only read; `claim` and `discard` write (planning calls them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .atomic import TEMP_SUFFIX, write_json
from .config import RunConfig
from .errors import OutputError
from .layout import WRITTEN, Layout
from .reader import Inputs, Shard


def fingerprint(config: RunConfig) -> dict[str, Any]:
    """The settings that change the labels, with precision `auto` resolved for this machine.

    Unresolved, a job that crashed on a GPU (auto = bf16) and is rerun on a CPU (auto = fp32)
    would resume as "the same job" and mix two precisions in one output folder.
    """
    from .model import resolve_device, resolve_precision

    values = config.fingerprint()
    if config.precision == "auto":
        # Only device `auto` needs torch (to look for a GPU); a named device decides by its name.
        device = resolve_device("auto") if config.device == "auto" else config.device
        values["precision"] = resolve_precision("auto", device)
    return values


def job_record(inputs: Inputs, config: RunConfig, shards: list[Shard]) -> dict[str, Any]:
    """What must be equal for two runs to share one output folder."""
    return {
        "fingerprint": fingerprint(config),
        "inputs": [{"path": f.path, "rows": f.num_rows} for f in inputs.files],
        "shards": {s.name: s.rows for s in shards},
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = [
        f"{key}: {old['fingerprint'].get(key)!r} before, {value!r} now"
        for key, value in new["fingerprint"].items()
        if old.get("fingerprint", {}).get(key) != value
    ]
    if old.get("inputs") != new["inputs"]:
        diffs.append("the input files or their row counts differ")
    elif old.get("shards") != new["shards"]:
        diffs.append("the shards differ (was --shard-rows changed?)")
    return diffs


def check(out: Layout, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse a folder that holds another job's output (unless --overwrite). Writes nothing."""
    if overwrite:
        return
    if out.run_file.exists():
        diffs = _differences(json.loads(out.run_file.read_text()), record)
        if diffs:
            raise OutputError(
                f"Output folder {str(out.root)!r} holds the output of a different job ({'; '.join(diffs)}). "
                "Mixing them would give inconsistent labels. Use another --output folder, or pass --overwrite "
                "to delete the old output and start again."
            )
    elif out.shard_files():
        raise OutputError(
            f"Output folder {str(out.root)!r} already has labels/ files but no {out.run_file.name}, so it is "
            "unknown which job wrote them. Use another --output folder, or pass --overwrite to replace them."
        )


def complete(out: Layout, shard: Shard) -> bool:
    """A finished output: its footer reads and it holds exactly the planned rows."""
    path = out.shard(shard.name)
    if not path.exists():
        return False
    try:
        return pq.ParquetFile(path).metadata.num_rows == shard.rows
    except Exception:  # any unreadable footer means the file must be redone
        return False


def clear(out: Layout) -> None:
    """Remove everything a run writes (for --overwrite), and nothing else."""
    for name in WRITTEN:
        path = out.root / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def claim(out: Layout, record: dict[str, Any], overwrite: bool) -> None:
    """Take the folder for this job: --overwrite clears it, run.json is written, stale temp files go."""
    if overwrite:
        clear(out)
    out.root.mkdir(parents=True, exist_ok=True)
    write_json(out.run_file, record)
    remove_temp_files(out)


def remove_temp_files(out: Layout) -> None:
    """Remove the hidden temporary files of writers that died (a crashed run, a killed Dask worker).

    Safe only while this run holds the folder's lock (lock.py): then no other writer exists.
    """
    for stale in out.labels.glob(f".*{TEMP_SUFFIX}") if out.labels.exists() else ():
        stale.unlink(missing_ok=True)


def discard(out: Layout, shard: Shard) -> None:
    """Remove a shard's broken or partial output, so that it is redone from scratch."""
    out.shard(shard.name).unlink(missing_ok=True)
