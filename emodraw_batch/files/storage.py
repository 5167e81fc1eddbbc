"""Where a path lives: the local disk, or an object store named by a URI (s3://, gs://, az://...).

One helper turns a path or URI into a pyarrow `FileSystem` and the path inside it (inputs and the
output folder alike), and one builds polars' `storage_options` for the same store. Credentials and
the endpoint always come from the usual environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION, AWS_ENDPOINT_URL; the cloud SDKs' own
variables for gs:// and az://), never from options that would end up in logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from emodraw_batch.errors import EmodrawError, InputError


def is_uri(path: str | Path) -> bool:
    """An object-store (or other non-local) URI; `file://` is local."""
    path = str(path)
    return "://" in path and not path.startswith("file://")


def scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if is_uri(uri) else ""


def local_path(path: str | Path) -> str:
    """The absolute local path of `path` (`~` expanded, `file://` removed)."""
    return str(Path(str(path).removeprefix("file://")).expanduser().absolute())


def filesystem(path: str | Path, error: type[EmodrawError] = InputError) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding `path` and the path inside it (`bucket/key` for object stores).

    pyarrow's native drivers first (s3://, gs://, hdfs://); other schemes go through fsspec.
    A scheme nothing can open raises `error` naming the URI.
    """
    path = str(path)
    if not is_uri(path):
        return pafs.LocalFileSystem(), local_path(path)
    if urlsplit(path).password is not None:  # s3://KEY:SECRET@bucket would end up in logs and the manifest
        raise error(
            f"{scheme(path)}:// URIs must not hold credentials (they would be written to logs, the manifest and "
            "Prefect's run history). Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment instead."
        )
    try:
        return pafs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        native = str(exc).splitlines()[0]  # no native driver for this scheme (az://, memory://...), or a bad URI
    except OSError as exc:  # e.g. the bucket's region could not be looked up: no such bucket, no network
        raise error(
            f"Cannot open {path!r} ({str(exc).splitlines()[0]}). Check the bucket name; credentials come from the "
            "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION), and an S3-compatible server's "
            "address from AWS_ENDPOINT_URL."
        ) from None
    try:
        import fsspec

        fs, inner = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as exc:
        raise error(
            f"Cannot open {path!r}: no filesystem for it (pyarrow: {native}; fsspec: {str(exc).splitlines()[0]}). "
            "Use a local path or a URI such as s3://bucket/prefix; for other schemes install their fsspec driver "
            "(e.g. gcsfs for gs://, adlfs for az://)."
        ) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner


def polars_options(uri: str | Path) -> dict[str, str] | None:
    """polars' `storage_options` for reading `uri`, from the environment (None for a local path).

    Only S3 needs help: polars' object store does not read AWS_ENDPOINT_URL everywhere, and refuses
    a plain-http endpoint (a local S3-compatible server) unless told. Other schemes use their SDK's
    environment as polars finds it.
    """
    if scheme(str(uri)) not in ("s3", "s3a"):
        return None
    env = {
        "aws_endpoint_url": "AWS_ENDPOINT_URL",
        "aws_access_key_id": "AWS_ACCESS_KEY_ID",
        "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "aws_session_token": "AWS_SESSION_TOKEN",
        "aws_region": "AWS_REGION",
    }
    options = {key: os.environ[name] for key, name in env.items() if os.environ.get(name)}
    options.setdefault("aws_region", os.environ.get("AWS_DEFAULT_REGION", ""))
    options = {k: v for k, v in options.items() if v}
    if options.get("aws_endpoint_url", "").startswith("http://"):
        options["aws_allow_http"] = "true"
    return options


# What an unreachable store looks like in the errors pyarrow and fsspec raise (S3's, GCS's, Azure's):
# the connection, not the data. Matched in lower case.
_UNREACHABLE = ("connect", "network", "timed out", "timeout", "unreachable", "name resolution", "resolve host",
                "503", "service unavailable", "curlcode", "broken pipe", "connection reset")


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says a store could not be reached (every shard would fail the same way), not bad data."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, OSError) and any(word in str(exc).lower() for word in _UNREACHABLE)
