"""A window of input rows -> the model's inputs: clean, detect languages, plan repeats, tokenize.

The steps `label_windows` (runner.py) runs ahead of the model, in the prefetch threads, and
`token_bounded`, which keeps a window of long texts within the tokens of a window of short ones
(chunk mode).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emodraw_batch.config import RunConfig
from emodraw_batch.inference import language
from emodraw_batch.inference.chunks import Chunker
from emodraw_batch.inference.classifier import EmotionClassifier
from emodraw_batch.job.dedup import Repeats, WindowPlan
from emodraw_batch.text import OK, prepare

Prepared = tuple[list[str], np.ndarray, "language.Rows | None"]
Encoded = tuple[np.ndarray, list[list[int]], np.ndarray, "language.Rows | None", "WindowPlan | None"]


def prepare_window(table: pa.Table, config: RunConfig, workers: int = 0) -> Prepared:
    """A window's cleaned texts, row statuses and languages (rows outside `config.languages`: status `language`).

    The input's language column (`config.language_column`), where the window has it, decides the rows it
    names a language for; the detector the others, in `workers` processes (0: this thread; same results).
    """
    column = table[config.text_column]
    if config.cast_text and not pa.types.is_string(column.type):
        column = column.cast(pa.string())
    texts, status = prepare(column)
    if not config.detects_languages:
        return texts, status, None
    given = None
    if config.language_column is not None and config.language_column in table.column_names:
        given = language.given_languages(table[config.language_column])  # the input's own, where it names one
    rows = language.detect_rows(
        texts, status, config.languages, config.language_skip_below, config.language_confidence, given, workers
    )
    return texts, status, rows


def encode_prepared(prepared: Prepared, clf: EmotionClassifier, repeats: Repeats | None = None) -> Encoded:
    """The statuses, the token ids and truncated flags of the rows with text that the model runs, the
    languages: all rows with status `ok`, or with `repeats` (dedup) only the first copy of each text
    new to the shard (the returned plan says which; call in window order)."""
    texts, status, languages = prepared
    texts = [texts[i] for i in np.flatnonzero(status == OK)]
    window = repeats.plan(texts) if repeats is not None else None
    if window is not None:
        texts = [texts[i] for i in window.run]
    ids, cut = clf.encode(texts)
    return status, ids, cut, languages, window


def encode_window(
    table: pa.Table, config: RunConfig, clf: EmotionClassifier, repeats: Repeats | None = None
) -> Encoded:
    """`encode_prepared` of one window read from `table`."""
    return encode_prepared(prepare_window(table, config, detecting_workers(config, clf)), clf, repeats)


def detecting_workers(config: RunConfig, clf: EmotionClassifier) -> int:
    """The processes that detect languages for `config` on `clf`'s device (0 without detection)."""
    return language.workers_for(config.language_workers, clf.device) if config.detects_languages else 0


def token_bounded(windows: Iterable[pa.Table], config: RunConfig) -> Iterator[pa.Table]:
    """In chunk mode, `windows` cut so that none holds more than `window_rows x max_length` tokens.

    A window of long texts would otherwise hold up to `max_chunks` times the tokens of a
    truncated one (token ids, chunk rows, padded batches). A long text's tokens are counted by its
    characters (a token takes at least one), up to the characters chunk mode keeps of it; a
    window of short texts is never cut.
    Truncate mode keeps its windows: a row never holds more than max_length tokens there.
    """
    if config.long_texts != "chunk":
        yield from windows
        return
    budget = config.window_rows * config.max_length
    keep = Chunker(config.max_length, 0, config.max_chunks, 0, 0).char_limit
    for table in windows:
        column = table[config.text_column]
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            yield table
            continue
        chars = np.minimum(pc.utf8_length(column).fill_null(0).to_numpy(), keep)
        # A text of up to 4 characters a token (English runs at 4-5) counts as one full window row,
        # what truncate mode holds for it; a longer one by its characters, a bound of its tokens.
        ends = np.cumsum(np.where(chars <= 4 * config.max_length, config.max_length, chars))
        if not len(ends) or ends[-1] <= budget:  # the usual case: the window as read
            yield table
            continue
        start = 0
        while start < table.num_rows:
            before = ends[start - 1] if start else 0
            stop = max(int(np.searchsorted(ends, before + budget, side="right")), start + 1)
            yield table.slice(start, stop - start)
            start = stop
