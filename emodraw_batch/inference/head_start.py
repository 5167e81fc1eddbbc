"""The head start: a window's batches run before an orchestrator is ready to submit that window.

For the seconds an orchestrator takes to start (importing Prefect, its server, the flow run and
its first tasks), the loaded model already runs the batches that `submit` would run for the
first window, in their order, in a thread of its own. The next `submit` stops the thread after
its batch in flight and takes every output it made, if its ids are the same (compared by
content); so the result is exactly what it would have been. numpy only; the classifier supplies
how to batch and run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

Ids = Any  # EncodedIds or a list of lists of token ids


class HeadStart:
    """The outputs run ahead for one window's ids, and the thread that may still be running more."""

    def __init__(self, batches: Callable[[Ids], Iterable[tuple[Any, Any, Any]]], run: Callable[[Any, Any], Any]) -> None:
        self._batches, self._run = batches, run  # the classifier's batching and its backend's forward of a batch
        self._done: tuple[Ids, list[Any]] | None = None
        self._behind: tuple[threading.Event, threading.Thread] | None = None

    def run(self, ids: Ids, stop: Callable[[], bool]) -> int:
        """Run the batches of `ids` in order until `stop()` says so; keep them; returns how many ran."""
        outputs: list[Any] = []
        for _batch, input_ids, lengths in self._batches(ids):
            if stop():
                break
            outputs.append(self._run(input_ids, lengths))
        self._done = (ids, outputs) if outputs else None
        return len(outputs)

    def behind(self, ids_of: Callable[[], Ids]) -> None:
        """`run(ids_of())` in a thread until `end` (or `take`) stops it; an error there only ends it."""
        self.end()
        stop = threading.Event()

        def work() -> None:
            try:
                self.run(ids_of(), stop.is_set)
            except Exception:  # noqa: BLE001 - only a speed-up: the shard's own task meets and reports the error
                pass

        thread = threading.Thread(target=work, name="emodraw-head-start", daemon=True)
        self._behind = (stop, thread)
        thread.start()

    def end(self) -> None:
        """Stop the thread, if one runs, after its batch in flight; what it ran is kept."""
        behind, self._behind = self._behind, None
        if behind is not None:
            behind[0].set()
            behind[1].join()

    def take(self, ids: Ids) -> list[Any]:
        """The outputs run ahead for exactly these `ids` (none for others); forgets them either way."""
        self.end()
        done, self._done = self._done, None
        return done[1] if done is not None and done[0] == ids else []
