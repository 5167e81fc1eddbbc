"""The one way anything is written: under a hidden temporary name, renamed when complete.

Readers (Parquet globs, `emodraw-batch run --model DIR`, people) never see a half-written
file or folder: a rename within one folder is atomic, and hidden names (`.name.HOST.PID.RANDOM.tmp`:
unique across machines and containers that share a mount, where pids alone collide) are skipped by `*.parquet` globs and by the resume check, which removes them.

Object stores (`replacing_in` with a remote filesystem) have no rename. There the content is
uploaded whole to the hidden temporary key first (a multipart upload that is never completed,
e.g. by a killed process, creates no object at all), then moved to its final key: pyarrow's S3
move is a server-side CopyObject, which makes the destination object appear complete or not
at all, followed by deleting the temporary key. So no reader ever sees a partial object under
a final name. The limits: S3 copies one object of at most 5 GB in one CopyObject (a larger
shard fails with an error, nothing partial appears; lower --shard-rows); a temporary object
left by a crash stays until the resume check removes it (hidden from `*.parquet` globs); and
a folder (`stats/`) is replaced file by file, not as one: each file is whole, its JSON files
are moved last, and files the new folder lacks are deleted after that. gs:// and az:// (via
fsspec) move by a server-side copy too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

TEMP_SUFFIX = ".tmp"
# Called when the content is complete, just before it is moved under its final name: raising stops
# the move and removes the temporary content ("may this writer still publish?", files/guard.py).
Check = Callable[[], None]


def unique_name(name: str, suffix: str = TEMP_SUFFIX) -> str:
    """A hidden name beside `name` that no other writer uses: host, pid and a random part.

    The pid alone is not enough where containers or machines share a mount (each container's
    first process is pid 1); the host name is kept readable, for whoever finds a leftover.
    """
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname())[:40] or "host"
    return f".{name}.{host}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def temp_name(path: Path) -> Path:
    """A new hidden temporary sibling of `path`, unique to this writer."""
    return path.with_name(unique_name(path.name))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def replacing(path: str | Path, check: Check | None = None) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to (a file or a folder).

    On success the content is flushed to disk and swapped in under `path` in one rename
    (an earlier folder of that name is replaced as a whole); on error, or when `check()`
    raises just before the rename, it is removed and `path` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(final)
    _remove(temp)
    try:
        yield temp
        if temp.is_file():
            with open(temp, "rb") as fh:
                os.fsync(fh.fileno())  # the data is on disk before the name says it is complete
        if check is not None:
            check()
    except BaseException:
        _remove(temp)
        raise
    if temp.is_dir() and final.exists():
        old = final.with_name(unique_name(final.name, ".old"))
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


def _remote_temp(path: str) -> str:
    folder, _, name = path.rstrip("/").rpartition("/")
    return f"{folder}/{unique_name(name)}"


def remove(path: str | Path, fs: pafs.FileSystem | None = None) -> None:
    """Delete a file or a whole folder, locally or in `fs`; nothing when it does not exist."""
    if fs is None or isinstance(fs, pafs.LocalFileSystem):
        _remove(Path(path))
    else:
        _remote_remove(fs, str(path))


def _remote_remove(fs: pafs.FileSystem, path: str) -> None:
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


@contextmanager
def replacing_in(fs: pafs.FileSystem, path: str, check: Check | None = None) -> Iterator[str]:
    """`replacing` for a path inside `fs`: yields the temporary path (inside `fs`) to write to.

    Local: exactly `replacing`. Remote (an object store): the temporary object is moved to `path`
    when complete (see the module docstring for what that guarantees); a folder is moved file by file.
    `check()` runs just before the move, as in `replacing`.
    """
    if isinstance(fs, pafs.LocalFileSystem):
        with replacing(path, check) as temp:
            yield str(temp)
        return
    temp = _remote_temp(path)
    _remote_remove(fs, temp)
    try:
        yield temp
        if check is not None:
            check()
    except BaseException:
        _remote_remove(fs, temp)
        raise
    if fs.get_file_info(temp).type != pafs.FileType.Directory:
        fs.move(temp, path)
        return
    found = fs.get_file_info(pafs.FileSelector(temp, recursive=True))
    new = sorted((f.path[len(temp) + 1 :] for f in found if f.type == pafs.FileType.File), key=lambda n: (n.endswith(".json"), n))
    for name in new:  # whole files under their final names; the JSON index (summary.json) last
        fs.move(f"{temp}/{name}", f"{path}/{name}")
    old = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    for f in old:
        if f.type == pafs.FileType.File and f.path[len(path) + 1 :] not in new:
            fs.delete_file(f.path)  # e.g. the by_<column> table of an earlier --group-by
    _remote_remove(fs, temp)


def write_bytes(path: str | Path, data: bytes, fs: pafs.FileSystem | None = None) -> None:
    """Write a whole (small) file atomically, locally or into `fs`."""
    if fs is None:
        with replacing(path) as temp:
            temp.write_bytes(data)
        return
    with replacing_in(fs, str(path)) as temp:
        with fs.open_output_stream(temp) as fh:
            fh.write(data)


def write_text(path: str | Path, text: str, fs: pafs.FileSystem | None = None) -> None:
    write_bytes(path, text.encode(), fs)


def write_json(path: str | Path, data: Any, fs: pafs.FileSystem | None = None) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n", fs)
