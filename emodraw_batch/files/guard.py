"""May this run still publish? The one check before each shard's final move and before the manifest.

A run's lock covers its main process only. A shard task can outlive it (the main process was
killed while tasks ran on an external Dask cluster) or outlast it (the whole process stalled
past its lease's expiry, then woke up), and another run may own the folder by then. So the
final move of every shard, and the manifest, first check that this run still owns the folder:
`run.json` names this run's id (each run writes its own when it plans, job/plan.py), and on an
object store the lease names it too (the run's id is its lease's token, lock.py). A check that
fails raises `Superseded`: the shard's temporary file is removed, nothing is published.

The check and the move are two requests, so a process that stalls in the milliseconds between
them can still publish one file late; `finish` then fails on any file in labels/ that its plan
does not name, and the next plan removes such files (job/resume.py).
"""

from __future__ import annotations

from typing import Any

from emodraw_batch.errors import OutputError
from emodraw_batch.files import lease
from emodraw_batch.files.layout import RUN_FILE, Layout


class Superseded(OutputError):
    """Another run owns the output folder now: this run must write nothing more to it."""


def _run_file_id(out: Layout) -> str | None:
    try:
        return out.read_json(out.run_file).get("run_id")
    except FileNotFoundError:
        return None


def _paragraph(out: Layout, what: str, why: str) -> Superseded:
    return Superseded(
        f"Output folder {out.uri!r} is no longer this run's: {why}. Another run took the folder over, "
        "after this run's main process ended (its tasks on a cluster kept running) or while this run was "
        f"stalled for longer than its lease lasts. This run stops without publishing {what} or anything after "
        "it (no manifest), so that the two runs' labels are not mixed. Use the other run's output; if no other "
        "run should be writing this folder, run the command again: it resumes from the finished shards."
    )


def check(out: Layout, run_id: str, what: str) -> None:
    """Raise Superseded unless `out` still belongs to the run `run_id`; `what` is what was about to be published."""
    found = _run_file_id(out)
    if found != run_id:
        raise _paragraph(out, what, f"its {RUN_FILE} names run {found!r}, this run is {run_id!r}")
    if out.remote:
        # A store error here fails the shard as any other store error in it would (retry, outage check).
        holder: dict[str, Any] = lease.load(out.fs, out.lock_file) or {}
        if holder.get("token") != run_id:
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "nobody"
            raise _paragraph(out, what, f"its lock {out.show(out.lock_file)!r} is held by {who}, not by this run")


def publishing(out: Layout, run_id: str | None, what: str) -> Any:
    """The `check` hook for one file's final move (atomic.replacing_in); None when `run_id` is None (unguarded)."""
    if run_id is None:
        return None
    return lambda: check(out, run_id, what)
