"""`emodraw-batch evaluate` and the numpy metrics (checked against scikit-learn)."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import make_texts
from emodraw_batch.emotions import EMOTIONS
from emodraw_batch.errors import InputError
from emodraw_batch.analysis.evaluate import evaluate
from emodraw_batch.analysis.metrics import confusion_matrix, report

REQUIRED = {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix", "labels"}


def prediction_sets():
    """Fixed (true, predicted) pairs: random, a class never predicted, a class absent from both, perfect."""
    rng = np.random.default_rng(7)
    true = rng.integers(0, 6, 500)
    noisy = np.where(rng.random(500) < 0.6, true, rng.integers(0, 6, 500))
    never_predicted = np.where(noisy == 5, 0, noisy)
    absent = np.where(true == 4, 3, true), np.where(noisy == 4, 2, noisy)  # class 4 nowhere
    return [(true, rng.integers(0, 6, 500)), (true, noisy), (true, never_predicted), absent, (true, true.copy())]


@pytest.mark.parametrize("case", range(5))
def test_metrics_equal_scikit_learn(case):
    from sklearn import metrics as skm

    true, pred = prediction_sets()[case]
    labels = list(EMOTIONS)
    ours = report(true, pred, labels)
    names_true, names_pred = np.array(labels)[true], np.array(labels)[pred]
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(true, pred), abs=1e-12)
    # scikit-learn's default label set (classes in the truth or the predictions) for the averages.
    assert ours["macro_f1"] == pytest.approx(skm.f1_score(names_true, names_pred, average="macro", zero_division=0), abs=1e-12)
    assert ours["weighted_f1"] == pytest.approx(
        skm.f1_score(names_true, names_pred, average="weighted", zero_division=0), abs=1e-12
    )
    p, r, f, s = skm.precision_recall_fscore_support(true, pred, labels=range(6), zero_division=0)
    for i, label in enumerate(labels):
        got = ours["per_class"][label]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[i], r[i], f[i]), abs=1e-12)
        assert got["support"] == s[i]
    assert ours["confusion_matrix"] == skm.confusion_matrix(true, pred, labels=range(6)).tolist()
    assert ours["labels"] == labels and REQUIRED <= set(ours)


def test_confusion_matrix_rows_are_true_columns_predicted():
    matrix = confusion_matrix([0, 0, 1, 2], [1, 1, 1, 0], 3)
    assert matrix.tolist() == [[0, 2, 0], [0, 1, 0], [1, 0, 0]]


def labelled_file(tmp_path, n=120, seed=0, fmt="txt"):
    rng = random.Random(seed)
    texts = make_texts(n, seed=seed)
    labels = [rng.choice(EMOTIONS) for _ in texts]
    if fmt == "txt":
        path = tmp_path / "data.txt"
        path.write_text("".join(f"{t};{y}\n" for t, y in zip(texts, labels)))
    else:
        path = tmp_path / "data.parquet"
        pq.write_table(pa.table({"review": texts, "emotion": labels}), path)
    return path, texts, labels


def test_evaluate_scores_the_classifier_predictions_and_saves_the_report(tiny_model, tmp_path):
    from emodraw_batch.inference.classifier import EmotionClassifier

    path, texts, labels = labelled_file(tmp_path)
    result = evaluate(tiny_model, path, tmp_path / "eval", device="cpu")
    # The predictions are those of the classifier `run` uses (top label of its probabilities).
    classifier = EmotionClassifier(tiny_model, device="cpu")
    predicted = np.array(classifier.labels)[classifier(texts).probs.argmax(1)]
    assert result["accuracy"] == pytest.approx(np.mean(predicted == np.array(labels)))
    assert result["labels"] == classifier.labels and REQUIRED <= set(result)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == len(texts) == result["n"]
    assert matrix.sum(axis=1).tolist() == [labels.count(label) for label in result["labels"]]
    assert matrix.sum(axis=0).tolist() == [int((predicted == label).sum()) for label in result["labels"]]

    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert {k: saved[k] for k in REQUIRED} == {k: result[k] for k in REQUIRED}
    with open(tmp_path / "eval" / "confusion_matrix.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == result["labels"] and [[int(v) for v in row[1:]] for row in rows[1:]] == matrix.tolist()
    with open(tmp_path / "eval" / "per_class.csv", newline="") as f:
        per_class = {row["label"]: row for row in csv.DictReader(f)}
    assert {label: int(row["support"]) for label, row in per_class.items()} == {
        label: labels.count(label) for label in result["labels"]
    }
    png = (tmp_path / "eval" / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_batching_never_changes_the_scores(tiny_model, tmp_path):
    path, _, _ = labelled_file(tmp_path, fmt="parquet")
    small = evaluate(tiny_model, path, text_column="review", label_column="emotion", device="cpu", batch_tokens=40)
    large = evaluate(tiny_model, path, text_column="review", label_column="emotion", device="cpu", batch_tokens=100_000)
    assert {k: small[k] for k in REQUIRED} == {k: large[k] for k in REQUIRED}


def test_labels_the_model_does_not_know_are_an_error(tiny_model, tmp_path):
    (tmp_path / "odd.txt").write_text("what a day;joy\nthis is odd;bewildered\n")
    with pytest.raises(InputError, match=r"\['bewildered'\].*known: \['sadness'"):
        evaluate(tiny_model, tmp_path / "odd.txt", device="cpu")


def test_cli_evaluate_prints_json_and_saves(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from emodraw_cli.app import app

    path, _, _ = labelled_file(tmp_path, n=40, seed=3)
    args = ["evaluate", "--model", tiny_model, "--data", str(path), "--output", str(tmp_path / "out"), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {k: printed[k] for k in REQUIRED} == {k: saved[k] for k in REQUIRED}
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "macro F1" in table.output and "confusion matrix" in table.output
    missing = CliRunner().invoke(app, ["evaluate", "--model", tiny_model, "--data", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 1 and "does not exist" in missing.output and "Traceback" not in missing.output
