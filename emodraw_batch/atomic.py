"""The one way anything is written: under a hidden temporary name, renamed when complete.

Readers (Parquet globs, `emodraw-batch run --model DIR`, people) never see a half-written
file or folder: a rename within one folder is atomic, and hidden names (`.name.PID.tmp`)
are skipped by `*.parquet` globs and by the resume check, which removes them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """The hidden temporary sibling of `path` for this process."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to (a file or a folder).

    On success the content is flushed to disk and swapped in under `path` in one rename
    (an earlier folder of that name is replaced as a whole); on error it is removed and
    `path` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(final)
    _remove(temp)
    try:
        yield temp
    except BaseException:
        _remove(temp)
        raise
    if temp.is_file():
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())  # the data is on disk before the name says it is complete
    if temp.is_dir() and final.exists():
        old = final.with_name(f".{final.name}.{os.getpid()}.old")
        os.replace(final, old)  # a folder cannot be renamed over a non-empty one
        os.replace(temp, final)
        _remove(old)
    else:
        os.replace(temp, final)
    # Files written by safetensors are owner-only (0600); give them the usual umask mode, so
    # that a service running as another user can read what this one wrote.
    umask = os.umask(0)
    os.umask(umask)
    for item in [final, *final.rglob("*")] if final.is_dir() else [final]:
        if item.is_file():
            item.chmod(0o666 & ~umask)


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as temp:
        temp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")
