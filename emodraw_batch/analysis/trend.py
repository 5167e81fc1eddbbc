"""Emotion shares across runs: one row per output folder, ordered by the day each run stands for.

    trend(["out/*"])          # folders or globs (the last path part), local or object storage

Reads only each run's `manifest.json` and `stats/summary.json` (no labels scan), so a year of
nightly outputs takes moments. A folder without a manifest (a run that did not finish) is listed
as unfinished, never skipped. The date is the `{date}` a scheduled run resolved (`run_date` in the
manifest), else the day its manifest was written.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from emodraw_batch.emotions import EMOTIONS
from emodraw_batch.errors import InputError
from emodraw_batch.files.layout import Layout, layout
from emodraw_batch.files.storage import filesystem, is_uri

GLOB = ("*", "?", "[")


@dataclass
class Run:
    """One output folder's place in the trend."""

    output: str
    date: str | None
    status: str  # "complete" or "unfinished"
    rows: int | None = None
    shares: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def expand(specs: list[str]) -> list[str]:
    """Output folders named by `specs`: each a folder, or a glob in its last path part (`out/*`)."""
    found: list[str] = []
    for spec in specs:
        parent, _, name = spec.rstrip("/").rpartition("/")
        if not any(c in name for c in GLOB):
            found.append(spec.rstrip("/"))
            continue
        fs, base = filesystem(parent or ".", InputError)
        entries = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        matches = sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory and fnmatch.fnmatch(e.base_name, name))
        if not matches:
            raise InputError(f"No output folder matches {spec!r}. Pass folders written by `emodraw-batch run`, "
                             "or a glob of them in the last part of the path (e.g. 'out/*').")
        found += [f"{parent}/{m}" if parent else m for m in matches]
    return found


def _read_json(out: Layout, path: str) -> dict[str, Any] | None:
    """The JSON file at `path` in the output, or None where it does not exist."""
    return out.read_json(path) if out.is_file(path) else None


def read_run(folder: str) -> Run:
    """The run in `folder`, from its manifest and statistics summary."""
    out = layout(folder)
    manifest = _read_json(out, out.manifest)
    if manifest is None:
        return Run(folder, None, "unfinished")
    summary = _read_json(out, out.stats_summary) or {}
    overall = {row["emotion"]: row for row in summary.get("overall", [])}
    date = manifest.get("run_date") or (manifest.get("finished_at") or "")[:10] or _modified_day(out)
    return Run(folder, date, "complete", int(manifest["summary"]["rows"]),
               {e: float(r["share"] or 0.0) for e, r in overall.items()}, {e: int(r["count"]) for e, r in overall.items()})


def _modified_day(out: Layout) -> str | None:
    """The day an older manifest (before run_date and finished_at) was written."""
    info = out.info(out.manifest)
    return info.mtime.date().isoformat() if info.mtime is not None else None


def trend(specs: list[str]) -> list[Run]:
    """Every run named by `specs`, ordered by date (unfinished ones last, by folder)."""
    runs = [read_run(folder) for folder in expand(specs)]
    return sorted(runs, key=lambda r: (r.date is None, r.date or "", r.output))


def labels_of(runs: list[Run]) -> list[str]:
    """The emotions of these runs, the canonical six first, in their order."""
    seen = {e for r in runs for e in r.shares}
    return [e for e in EMOTIONS if e in seen] + sorted(seen - set(EMOTIONS))


def to_dicts(runs: list[Run]) -> list[dict[str, Any]]:
    labels = labels_of(runs)
    return [{"output": r.output, "date": r.date, "status": r.status, "rows": r.rows,
             **{f"share_{e}": r.shares.get(e) for e in labels}} for r in runs]


def chart(runs: list[Run], path: str | Path) -> Path:
    """A PNG of each emotion's share over the complete runs, in date order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emodraw_batch.emotions import COLORS

    done = [r for r in runs if r.status == "complete"]
    fig, ax = plt.subplots(figsize=(max(6, len(done) * 0.6), 4))
    for emotion in labels_of(done):
        ax.plot([r.date or r.output for r in done], [r.shares.get(emotion, 0.0) * 100 for r in done], marker="o",
                label=emotion, color=COLORS.get(emotion))
    ax.set_ylabel("share of classified rows, %")
    ax.set_title("Emotion shares by run")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    if is_uri(str(path)):
        raise InputError(f"--chart {str(path)!r}: the chart is written to a local file; pass a local path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
