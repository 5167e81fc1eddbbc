"""Make a rerun of the same job resume, and refuse to mix different jobs in one folder.

`DIR/run.json` records what the folder holds (the settings that change labels,
and the inputs) as soon as a run starts. A rerun with the same record skips
every shard whose output file is complete (footer reads, row count matches the
plan) and redoes the rest; a different record is an error unless --overwrite.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .errors import OutputError
from .layout import RUN_FILE, WRITTEN
from .reader import Inputs, Shard
from .atomic import write_json



def job_record(inputs: Inputs, fingerprint: dict[str, Any], shards: list[Shard]) -> dict[str, Any]:
    """What must be equal for two runs to share one output folder."""
    return {
        "fingerprint": fingerprint,
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


def clear(out_dir: Path) -> None:
    """Remove everything a run writes (for --overwrite), and nothing else."""
    for name in WRITTEN:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def start(out_dir: Path, record: dict[str, Any], shards: list[Shard], overwrite: bool) -> list[Shard]:
    """Claim the folder for this job and return the shards whose outputs are already complete."""
    labels = out_dir / "labels"
    if overwrite:
        clear(out_dir)
    run_file = out_dir / RUN_FILE
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        diffs = _differences(previous, record)
        if diffs:
            raise OutputError(
                f"Output folder {str(out_dir)!r} holds the output of a different job ({'; '.join(diffs)}). "
                "Mixing them would give inconsistent labels. Use another --output folder, or pass --overwrite "
                "to delete the old output and start again."
            )
    elif labels.exists() and any(labels.glob("*.parquet")):
        raise OutputError(
            f"Output folder {str(out_dir)!r} already has labels/ files but no {RUN_FILE}, so it is unknown "
            "which job wrote them. Use another --output folder, or pass --overwrite to replace them."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_file, record)
    # Temporary files of a crashed run are hidden from readers; remove them now.
    for stale in labels.glob(".*.tmp") if labels.exists() else ():
        stale.unlink(missing_ok=True)
    return [s for s in shards if _complete(labels / s.name, s.rows)]


def _complete(path: Path, rows: int) -> bool:
    """A finished output: its footer reads and it holds exactly the planned rows. Broken ones are removed."""
    if not path.exists():
        return False
    try:
        ok = pq.ParquetFile(path).metadata.num_rows == rows
    except Exception:  # any unreadable footer means the file must be redone
        ok = False
    if not ok:
        path.unlink()
    return ok
