"""Per-class logit offsets (emodraw_batch/train/class_bias.py, tools/tune_class_bias.py): chosen on
labelled rows for macro F1, folded into the classifier's bias so every engine applies them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from emodraw_batch.analysis.metrics import report
from emodraw_batch.train import class_bias

ROOT = Path(__file__).resolve().parents[1]


def under_predicted(seed: int, rows: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities of a noisy 4-class model that takes class 3 (rare) for class 0 too often."""
    rng = np.random.default_rng(seed)
    y = rng.choice(4, size=rows, p=[0.4, 0.3, 0.2, 0.1])
    logits = rng.normal(0, 1.0, (rows, 4)) + 2.5 * np.eye(4)[y]
    logits[:, 3] -= 1.5
    return logits - np.log(np.exp(logits).sum(1, keepdims=True)), y


def macro_f1(y: np.ndarray, scores: np.ndarray) -> float:
    return report(y, scores.argmax(1), range(scores.shape[1]))["macro_f1"]


def test_offsets_raise_macro_f1_on_the_rows_they_were_chosen_on_and_on_new_rows():
    x, y = under_predicted(0)
    offsets = class_bias.tune_offsets(x, y)
    assert offsets[3] - offsets[:3].max() > 0.5  # the rare, under-predicted class is pushed up (offsets are relative)
    before, after = (macro_f1(y, x + o) for o in (np.zeros(4), offsets))
    assert after > before + 0.02
    x2, y2 = under_predicted(1)  # the same model on other rows: the offsets carry over
    assert macro_f1(y2, x2 + offsets) > macro_f1(y2, x2) + 0.02


def test_a_balanced_model_keeps_zero_offsets():
    y = np.repeat(np.arange(3), 100)
    x = np.log(np.full((300, 3), 0.05))
    x[np.arange(300), y] = np.log(0.9)  # every row right: nothing to gain, ties keep 0
    assert np.array_equal(class_bias.tune_offsets(x, y), np.zeros(3))


def test_the_tool_writes_a_checkpoint_whose_logits_carry_the_offsets(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from conftest import make_texts

    texts = make_texts(120, seed=5, max_words=12)
    labels = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    (tmp_path / "val.txt").write_text("".join(f"{t};{labels[i % 6]}\n" for i, t in enumerate(texts)))
    out = tmp_path / "tuned"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "tune_class_bias.py"), tiny_model, "--val",
                           str(tmp_path / "val.txt"), "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    offsets = np.array([printed["offsets"][label] for label in labels])
    assert printed["val_macro_f1"][1] >= printed["val_macro_f1"][0]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = tokenizer(texts[:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()(**batch).logits.numpy()
        b = AutoModelForSequenceClassification.from_pretrained(out).eval()(**batch).logits.numpy()
    np.testing.assert_allclose(b - a, np.broadcast_to(offsets, a.shape), atol=1e-5)
