"""How the labelling process's allocators keep memory: every allocator setting in one place.

Three allocators hold a run's memory besides Python's: glibc's malloc (Python objects, ONNX
Runtime, numpy), pyarrow's pool (mimalloc: every Arrow buffer read, labelled and written) and
polars' (jemalloc: the statistics). Left to their defaults, each keeps memory it has freed, and the
more windows a run has, the more it keeps at its highest moment: what made a shard's peak RSS grow
with the corpus (issue 22, docs/performance.md). The settings here make it depend on the window,
not on the number of windows:

- `ALLOCATOR_ENV`, set by `tune_allocators` when `emodraw_batch` is imported (before pyarrow or
  polars load, which is when their allocators read it; a value already in the environment wins):
  mimalloc returns freed pages at once and uses no transparent huge pages; jemalloc returns
  dirty pages at once.
- `cap_malloc_arenas`: at most two glibc arenas.
- `release_freed_memory`: each pipeline thread gives pyarrow back what it freed, once a window.
"""

from __future__ import annotations

import ctypes
import os
import sys

# Measured on one shard (tiny model), in process and through the CLI: docs/performance.md, issue 22.
ALLOCATOR_ENV = {
    # pyarrow's mimalloc (v3) purges freed pages after 1 s by default: a window's freed buffers
    # stayed resident while the next ones were allocated. 0: purged when freed.
    "MIMALLOC_PURGE_DELAY": "0",
    # ... and backs its arena with 2 MiB transparent huge pages where the kernel allows it, so a
    # few live KiB kept whole 2 MiB pages resident: 29 MiB of a shard's peak, no faster.
    "MIMALLOC_ALLOW_THP": "0",
    # polars' jemalloc keeps freed pages 0.5-1 s (polars' own setting, which this follows and so
    # overrides): the statistics' peak grew with the rows they read (+16 MiB from 100,000 to 2
    # million output rows, their own process; +5 with this).
    "_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0",
}

# glibc's mallopt parameter for the most malloc arenas (malloc.h: M_ARENA_MAX), and our cap.
_M_ARENA_MAX = -8
_ARENAS = 2


def tune_allocators() -> None:
    """Put `ALLOCATOR_ENV` into this process's environment where it is not set (and so its children's).

    Takes effect only if pyarrow and polars are not loaded yet: their allocators read it once,
    when their libraries load. `emodraw_batch/__init__.py` calls it first thing.
    """
    for name, value in ALLOCATOR_ENV.items():
        os.environ.setdefault(name, value)


def cap_malloc_arenas() -> None:
    """Let glibc's malloc keep at most two arenas in this process (unless MALLOC_ARENA_MAX says otherwise).

    Each thread that allocates while another holds the lock gets an arena of its own (up to 8 per
    core), and each arena keeps the windows it once held: the reader, writer, main and model threads
    each hold a window's worth of freed memory. Measured (tiny model, CPU, 200,000 rows, 50,000-row
    windows): peak RSS 921 MiB with glibc's default, 733 MiB with 2 arenas, 732 with 1, 764 with 4
    (tests/test_memory.py counts the arenas). Called before the model loads (`runner.classifier_for`);
    a no-op off glibc.
    """
    if sys.platform != "linux" or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, _ARENAS)
    except (OSError, AttributeError):  # not glibc (musl has no arenas to cap)
        pass


def release_freed_memory() -> None:
    """Give back what this thread freed in pyarrow's memory pool (called by each pipeline thread per window).

    pyarrow's allocator (mimalloc) keeps a thread's freed pages in that thread's own heap, and
    `release_unused` collects the calling thread's only: called once a shard from the main thread,
    it left the reading and writing threads' heaps full. Per window in those threads, a shard's
    peak RSS fell by 12-31 MiB (library path, 100,000 and 1 million rows, docs/performance.md),
    for a microsecond a call.
    """
    # Imported here, not at the top: this module is imported before pyarrow must load (tune_allocators).
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
