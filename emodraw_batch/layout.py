"""The output folder of `emodraw-batch run`: every name in it is decided here.

    DIR/run.json        the job record, written when a run starts (resume compares it)
    DIR/labels/         one part-FFFFF-GGGGG.parquet per shard (the labelled rows)
    DIR/manifest.json   written last, when every shard is complete
    DIR/stats/          aggregate statistics (stats.py)
    DIR/charts/         PNG charts and report.html (report.py)
    DIR/.emodraw.lock   held by the run writing the folder (lock.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LABELS = "labels"
STATS = "stats"
CHARTS = "charts"
RUN_FILE = "run.json"
MANIFEST = "manifest.json"
STATS_SUMMARY = "summary.json"
LOCK_FILE = ".emodraw.lock"
# What --overwrite may delete: everything a run writes, and nothing else.
WRITTEN = (LABELS, STATS, CHARTS, RUN_FILE, MANIFEST)


@dataclass(frozen=True)
class Layout:
    """The paths of one output folder."""

    root: Path

    @property
    def labels(self) -> Path:
        return self.root / LABELS

    @property
    def stats(self) -> Path:
        return self.root / STATS

    @property
    def charts(self) -> Path:
        return self.root / CHARTS

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def stats_summary(self) -> Path:
        return self.stats / STATS_SUMMARY

    def shard(self, name: str) -> Path:
        return self.labels / name

    def shard_files(self) -> list[Path]:
        """The finished label files (hidden temporary files are not included)."""
        return sorted(self.labels.glob("*.parquet")) if self.labels.is_dir() else []


def layout(out_dir: str | Path) -> Layout:
    return Layout(Path(out_dir))
