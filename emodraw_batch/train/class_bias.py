"""Per-class offsets of a classifier's logits, chosen on labelled validation texts for macro F1.

A model trained on an imbalanced set (the Emotions dataset has 9x more joy than surprise) picks
its rare classes too seldom: surprise and love lose recall, and macro F1 with them. Adding one
offset per class to the logits (what a prior shift does to Bayes' rule) trades a little of the
common classes' precision for the rare ones' recall. Six numbers, chosen on the validation split
by coordinate ascent over a grid, then folded into the classifier's bias: the checkpoint stays an
ordinary one, and every engine (torch, ONNX Runtime) and `run` use the offsets with no new code.

Used by tools/tune_class_bias.py; the shipped model's offsets are in docs/training.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emodraw_batch.analysis.metrics import report

GRID = np.round(np.arange(-2.0, 2.0001, 0.1), 1)  # offsets tried per class, in logits


def tune_offsets(log_probs: np.ndarray, y_true: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Offsets (one per class) that maximise macro F1 of argmax(log_probs + offsets) on these rows.

    Coordinate ascent: each class's offset in turn takes the best value of GRID with the others
    fixed, for `rounds` rounds or until nothing changes. Ties go to the smaller offset, so a
    class that needs none keeps 0. Deterministic.
    """
    classes = range(log_probs.shape[1])
    offsets = np.zeros(len(classes))
    for _ in range(rounds):
        before = offsets.copy()
        for c in classes:
            def score(value: float) -> tuple[float, float]:
                trial = offsets.copy()
                trial[c] = value
                return report(y_true, np.argmax(log_probs + trial, axis=1), classes)["macro_f1"], -abs(value)

            offsets[c] = max(GRID, key=score)
        if np.array_equal(before, offsets):
            break
    return offsets


def fold_into_head(model: Any, offsets: np.ndarray) -> None:
    """Add the offsets to the classifier's output bias (in place): logits + offsets from then on."""
    import torch

    head = model.classifier
    with torch.no_grad():
        head.bias += torch.as_tensor(offsets, dtype=head.bias.dtype)
