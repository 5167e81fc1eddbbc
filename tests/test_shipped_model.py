"""The checkpoint shipped in data/ loads through the normal path and labels plain sentences right."""

from __future__ import annotations

from pathlib import Path

from emodraw_batch.inference.classifier import EmotionClassifier

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "albert-mini-emotion"


def test_shipped_checkpoint_labels_obvious_sentences():
    clf = EmotionClassifier(str(SHIPPED), device="cpu")
    assert clf.labels == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    sentences = {
        "i feel so happy and cheerful today": "joy",
        "i feel really sad and lonely": "sadness",
        "i am furious and angry at them": "anger",
        "i feel scared and afraid of the dark": "fear",
        "i feel so loved and cared for": "love",
        "i was amazed and shocked by the news": "surprise",
    }
    probs = clf(list(sentences)).probs
    assert [clf.labels[i] for i in probs.argmax(1)] == list(sentences.values())
