"""A store outage ends a run within about a minute, with one paragraph, instead of retrying every shard.

Retries are right for a blip, wrong for an outage: with the store down, every remaining shard would
wait out all its retries (9 minutes and 14 tracebacks for 13 shards, measured). So, in a process,
once a shard meets an unreachable store (`storage.unreachable`), shards that have not started yet
there do not start (`StoreDown`, not retried) while that shard's own retries go on; one that
succeeds clears it (a blip). `label_all` then ends the run on the first shard whose attempts all
met the outage, with `StoreUnreachable`: the store, the error, the kept shards and the fix.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from emodraw_batch.errors import EmodrawError, OutputError
from emodraw_batch.files.reader import Shard
from emodraw_batch.files.storage import is_uri, unreachable

_down = threading.Event()  # this process: a shard found the store unreachable and has not succeeded since


class StoreDown(EmodrawError):
    """A shard not started because the store was found unreachable (never retried)."""


class StoreUnreachable(OutputError):
    """The run stopped on a store outage; the finished shards are kept and a rerun resumes."""


def reset() -> None:
    _down.clear()


@contextmanager
def watching(shard: Shard, first_attempt: bool) -> Iterator[None]:
    """Run one attempt of `shard`: not at all while the store is down (unless retrying), noting an outage."""
    if first_attempt and _down.is_set():
        raise StoreDown(f"{shard.name} was not started: the store was found unreachable while labelling another shard.")
    try:
        yield
    except OSError as exc:
        if unreachable(exc):
            _down.set()
        raise
    _down.clear()


def paragraph(shard: Shard, exc: BaseException, output: str, kept: int, labels: str, not_started: int) -> str:
    """The one paragraph for a run stopped by an outage."""
    stores = []
    if is_uri(output):
        stores.append(f"the output {output!r}")
    if is_uri(shard.path):
        stores.append(f"the input {shard.path!r}")
    where = " or ".join(stores) or f"the output {output!r} or the input {shard.path!r}"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (f"The storage could not be reached ({where}) while labelling {shard.name}: {type(exc).__name__}: {first}. "
            f"The run stopped instead of retrying the other {not_started} shard(s) against it; the {kept} finished "
            f"shard(s) are kept in {labels!r}. Check that the store is up and reachable from here (its endpoint, the "
            "network, the credentials: AWS_ENDPOINT_URL and the AWS_* variables for S3), then run the same command "
            "again to label only the missing shards.")
