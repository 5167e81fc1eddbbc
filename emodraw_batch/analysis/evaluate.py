"""Score a checkpoint on labelled data with exactly the classifier `run` uses.

`evaluate()` returns the report (accuracy, macro/weighted F1, per-class scores,
confusion matrix) and, given a folder, saves it as report.json, per_class.csv,
confusion_matrix.csv and confusion_matrix.png.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from emodraw_batch.files.labelled import check_known, read_labelled
from emodraw_batch.analysis.metrics import report
from emodraw_batch.atomic import replacing, write_json, write_text

CHUNK_ROWS = 8192  # texts per classifier call: bounds memory and paces the progress bar


def evaluate(
    model: str,
    data: str | Path,
    output: str | Path | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    device: str = "auto",
    precision: str = "auto",
    max_length: int = 128,
    batch_tokens: int | None = None,
    allow_pickle: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Classify every labelled text with `model` and compare the top label with the true one."""
    from emodraw_batch.inference.classifier import EmotionClassifier

    started = time.perf_counter()
    labelled = read_labelled(data, text_column, label_column)  # before the model loads: bad input fails fast
    classifier = EmotionClassifier(
        model, device=device, precision=precision, max_length=max_length, batch_tokens=batch_tokens,
        allow_pickle=allow_pickle,
    )
    check_known(labelled, classifier.labels, f"model {model!r}")
    index = {label: i for i, label in enumerate(classifier.labels)}
    y_true = np.array([index[label] for label in labelled.labels], dtype=np.int64)
    y_pred = np.empty(len(labelled), dtype=np.int64)
    if on_start:
        on_start(len(labelled))
    for start in range(0, len(labelled), CHUNK_ROWS):
        texts = labelled.texts[start : start + CHUNK_ROWS]
        y_pred[start : start + len(texts)] = classifier(texts).probs.argmax(axis=1)
        if on_rows:
            on_rows(len(texts))
    result = report(y_true, y_pred, classifier.labels)
    result.update(
        model=model,
        data=labelled.path,
        rows_dropped=labelled.dropped,
        max_length=classifier.max_length,
        device=classifier.device,
        precision=classifier.precision,
        seconds=time.perf_counter() - started,
    )
    if output is not None:
        save_report(result, Path(output).expanduser())
    return result


def _write_csv(path: Path, rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    write_text(path, buffer.getvalue())


def save_report(result: dict[str, Any], folder: Path) -> None:
    """report.json, per_class.csv, confusion_matrix.csv (rows = true, columns = predicted) and its PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    labels, matrix = result["labels"], result["confusion_matrix"]
    write_json(folder / "report.json", result)
    _write_csv(
        folder / "per_class.csv",
        [["label", "precision", "recall", "f1", "support"]]
        + [[label, *(result["per_class"][label][k] for k in ("precision", "recall", "f1", "support"))] for label in labels],
    )
    _write_csv(
        folder / "confusion_matrix.csv",
        [["true\\predicted", *labels]] + [[label, *row] for label, row in zip(labels, matrix)],
    )
    plot_confusion(np.asarray(matrix), labels, folder / "confusion_matrix.png",
                   title=f"accuracy {result['accuracy']:.3f}, macro F1 {result['macro_f1']:.3f} (n={result['n']:,})")


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path, title: str = "") -> None:
    """Counts in the cells; colour is the share of each true class (row), so rare classes stay readable."""
    from matplotlib.figure import Figure  # the object API needs no GUI backend

    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.75 * len(labels)
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{matrix[i, j]:,}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.5 else "black")
    with replacing(path) as temp:
        fig.savefig(temp, dpi=120, format="png")
