"""Read labelled texts for `train` and `evaluate` (Parquet, CSV, or `text;label` lines),
and unlabelled ones for `distill`.

Texts get the same cleaning as in `run` (text.prepare), so a model is trained and
checked on exactly what it will see later. Rows without a usable text or label are
dropped and counted, never silently sent to the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from emodraw_batch.emotions import EMOTIONS
from emodraw_batch.errors import InputError
from emodraw_batch.text import OK, prepare

PARQUET = (".parquet", ".pq")
CSV = {".csv": ",", ".tsv": "\t"}


@dataclass(frozen=True)
class Labelled:
    """Texts and their labels (same length), plus how many rows were unusable."""

    path: str
    texts: list[str]
    labels: list[str]
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.texts)


def _read_lines(path: Path) -> pa.Table:
    """The Emotions-dataset format: one `text;label` per line (split at the last `;`)."""
    texts: list[str] = []
    labels: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            text, sep, label = line.rpartition(";")
            if not sep:
                raise InputError(
                    f"{str(path)!r} line {number} has no ';' separator: {line[:80]!r}. Files that are not "
                    "Parquet (.parquet) or CSV (.csv/.tsv) are read as `text;label` lines, one example per line."
                )
            texts.append(text)
            labels.append(label)
    return pa.table({"text": pa.array(texts, pa.string()), "label": pa.array(labels, pa.string())})


def _read_unlabelled_lines(path: Path) -> pa.Table:
    """One text per line; `text;label` lines (every line ends in `;word`) lose their label."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        rows = [line.rstrip("\r\n") for line in lines]
    rows = [line for line in rows if line.strip()]
    split = [line.rpartition(";") for line in rows]
    labelled = bool(rows) and all(sep and tail.strip() and len(tail) <= 40 and " " not in tail.strip()
                                  for _, sep, tail in split)
    texts = [text for text, _, _ in split] if labelled else rows
    return pa.table({"text": pa.array(texts, pa.string())})


def _read_table(path: Path, text_column: str, label_column: str | None) -> pa.Table:
    """Columns text (and label, unless label_column is None) of a Parquet, CSV or lines file."""
    suffix = path.suffix.lower()
    try:
        if suffix in PARQUET:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif suffix in CSV:
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=CSV[suffix], newlines_in_values=True))
        else:
            return _read_lines(path) if label_column is not None else _read_unlabelled_lines(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"Could not read {str(path)!r}: {str(exc).splitlines()[0]}") from None
    wanted = [text_column] if label_column is None else [text_column, label_column]
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise InputError(
            f"{str(path)!r} has no column {', '.join(map(repr, missing))} (columns found: {table.column_names}). "
            "Pass the right names with --text-column" + (" and --label-column." if label_column else ".")
        )
    return table.select(wanted).rename_columns(["text", "label"][: len(wanted)])


def _check_text(text: pa.ChunkedArray, text_column: str, path: Path) -> None:
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type) or pa.types.is_string_view(text.type)):
        raise InputError(f"Text column {text_column!r} in {str(path)!r} has type {text.type}, not string. Pass the text column.")


def read_texts(path: str | Path, text_column: str = "text") -> tuple[list[str], int]:
    """Unlabelled texts, cleaned as in `run`: (texts, rows dropped for having no text).

    Parquet and CSV give their text column; any other file is read one text per line, and
    `text;label` lines (the labelled format) give their text, the label ignored.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Text file {str(path)!r} does not exist. Pass a Parquet, CSV, `text;label` or plain text file.")
    text = _read_table(path, text_column, None).column("text")
    _check_text(text, text_column, path)
    texts, status = prepare(text)
    keep = [t for t, s in zip(texts, status) if s == OK]
    return keep, len(texts) - len(keep)


def read_labelled(path: str | Path, text_column: str = "text", label_column: str = "label") -> Labelled:
    """Read one labelled file; rows with a null/blank text or label are dropped and counted."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Labelled data file {str(path)!r} does not exist. Pass a Parquet, CSV or `text;label` file.")
    table = _read_table(path, text_column, label_column)
    text, label = table.column("text"), table.column("label")
    _check_text(text, text_column, path)
    if not (pa.types.is_integer(label.type) or pa.types.is_string(label.type) or pa.types.is_large_string(label.type)
            or pa.types.is_boolean(label.type) or pa.types.is_dictionary(label.type)):
        raise InputError(
            f"Label column {label_column!r} in {str(path)!r} has type {label.type}; labels must be strings or integers."
        )
    texts, status = prepare(text)
    labels = pc.utf8_trim_whitespace(label.cast(pa.string())).to_pylist()
    keep = [i for i, (s, lab) in enumerate(zip(status, labels)) if s == OK and lab]
    if not keep:
        raise InputError(f"{str(path)!r} holds no row with both a text and a label ({len(labels)} rows read).")
    return Labelled(str(path), [texts[i] for i in keep], [labels[i] for i in keep], dropped=len(labels) - len(keep))


def label_order(labels: Iterable[str]) -> list[str]:
    """The model's id2label order: the canonical emotion order for the six emotions, else sorted."""
    found = set(labels)
    return list(EMOTIONS) if found == set(EMOTIONS) else sorted(found)


def check_known(data: Labelled, known: Sequence[str], what: str) -> None:
    """Every label in `data` must be one of `known` (the training labels or the model's)."""
    unknown = sorted(set(data.labels) - set(known))
    if unknown:
        raise InputError(
            f"{data.path!r} has labels that {what} does not know: {unknown} (known: {list(known)}). "
            "Fix the labels, or use data with the same label set."
        )
