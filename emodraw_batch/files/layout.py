"""The output folder of `emodraw-batch run`: every name in it is decided here, and where it lives.

    DIR/run.json        the job record, written when a run starts (resume compares it)
    DIR/labels/         one part-FFFFF-GGGGG.parquet per shard (the labelled rows)
    DIR/manifest.json   written last, when every shard is complete
    DIR/stats/          aggregate statistics (stats.py)
    DIR/charts/         PNG charts and report.html (report.py; a local --charts DIR for remote outputs)
    DIR/.emodraw.lock   held by the run writing the folder (lock.py)

DIR is a local folder or an object-store URI (`s3://bucket/prefix`, `gs://...`): a `Layout` holds
the pyarrow filesystem and the folder's path inside it, and every reader and writer of the output
goes through it, so local and remote outputs take the same code path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from emodraw_batch.atomic import TEMP_SUFFIX, remove
from emodraw_batch.errors import OutputError
from emodraw_batch.files.storage import filesystem, is_uri, scheme

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
    """The paths of one output folder, inside `fs`. Paths are strings with `/` (pyarrow's paths)."""

    fs: pafs.FileSystem
    root: str  # inside fs: an absolute local path, or bucket/prefix
    uri: str  # as the user gave it: for messages

    @property
    def remote(self) -> bool:
        return not isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def location(self) -> str:
        """What another process (a Dask worker on another machine) opens: absolute path or the URI."""
        return self.uri if self.remote else self.root

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @property
    def labels(self) -> str:
        return self.join(LABELS)

    @property
    def stats(self) -> str:
        return self.join(STATS)

    @property
    def charts(self) -> str:
        return self.join(CHARTS)

    @property
    def run_file(self) -> str:
        return self.join(RUN_FILE)

    @property
    def lock_file(self) -> str:
        return self.join(LOCK_FILE)

    @property
    def manifest(self) -> str:
        return self.join(MANIFEST)

    @property
    def stats_summary(self) -> str:
        return self.join(STATS, STATS_SUMMARY)

    def shard(self, name: str) -> str:
        return self.join(LABELS, name)

    def show(self, path: str) -> str:
        """`path` (inside fs) as the user would write it: `out/labels`, `s3://bucket/job/labels`."""
        return self.uri.rstrip("/") + path[len(self.root.rstrip("/")) :]

    def url(self, path: str) -> str:
        """`path` as polars opens it: an absolute local path, or scheme://bucket/key."""
        return f"{scheme(self.uri)}://{path}" if self.remote else path

    def info(self, path: str) -> pafs.FileInfo:
        return self.fs.get_file_info(path)

    def is_file(self, path: str) -> bool:
        return self.info(path).type == pafs.FileType.File

    def is_dir(self, path: str) -> bool:
        return self.info(path).type == pafs.FileType.Directory

    def read_json(self, path: str) -> Any:
        with self.fs.open_input_stream(path) as fh:
            return json.loads(fh.read().decode())

    def files(self, folder: str) -> list[pafs.FileInfo]:
        """The files directly in `folder` (none when it does not exist)."""
        found = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        return [f for f in found if f.type == pafs.FileType.File]

    def shard_files(self) -> list[str]:
        """The finished label files (hidden temporary files are not included)."""
        return sorted(f.path for f in self.files(self.labels) if f.base_name.endswith(".parquet") and not f.base_name.startswith("."))

    def temp_files(self, folder: str) -> list[str]:
        """Hidden temporary files left in `folder` by a crashed run."""
        return [f.path for f in self.files(folder) if f.base_name.startswith(".") and f.base_name.endswith(TEMP_SUFFIX)]

    def remove(self, path: str) -> None:
        """Delete a file or a whole folder; nothing when it does not exist."""
        remove(path, self.fs)


def layout(out_dir: str | Path | Layout) -> Layout:
    """The output folder `out_dir`: a local path or a URI (s3://bucket/prefix, gs://..., az://...)."""
    if isinstance(out_dir, Layout):
        return out_dir
    fs, root = filesystem(out_dir, error=OutputError)
    if is_uri(out_dir) and not root.strip("/"):
        raise OutputError(f"Output {str(out_dir)!r} names no bucket; pass --output s3://BUCKET/PREFIX.")
    return Layout(fs, root.rstrip("/") if is_uri(out_dir) else root, str(out_dir))
