"""A BERT becomes an ALBERT (emodraw_batch/train/from_bert.py): the same logits when nothing is cut,
a working model when layers or vocabulary are cut, fp16 on disk and fp32 loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emodraw_batch.emotions import EMOTIONS
from emodraw_batch.train import from_bert

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["i feel happy today", "the movie was scary and i felt afraid", "my friend is lovely", "so tired"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    """A tiny random BertForSequenceClassification for the six emotions, with a WordPiece vocabulary
    whose file order puts whole words before pieces (as BERT's does)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = sorted(set(" ".join(TEXTS).split())) + ["unusedword", "zebra", "αβγ"]
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'"))
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, "α", "β", "γ", *words,
             *(f"##{c}" for c in chars), "##α", "##β", "##γ"]
    folder = tmp_path_factory.mktemp("bert")
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
                        id2label=dict(enumerate(EMOTIONS)), label2id={e: i for i, e in enumerate(EMOTIONS)})
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


def load(folder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoModelForSequenceClassification.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_all_layers_and_the_full_embedding_give_the_berts_logits(bert):
    model, tokenizer = load(bert)
    albert = from_bert.convert(model, [0, 1, 2]).eval()
    assert type(albert).__name__ == "AlbertForSequenceClassification"
    assert albert.config.num_hidden_groups == 3 and albert.config.id2label == model.config.id2label
    torch.testing.assert_close(logits(albert, tokenizer), logits(model, tokenizer), atol=1e-5, rtol=0)


def test_kept_layers_are_the_named_ones_in_order(bert):
    model, _ = load(bert)
    albert = from_bert.convert(model, [2, 0])
    groups = albert.albert.encoder.albert_layer_groups
    assert torch.equal(groups[0].albert_layers[0].ffn.weight, model.bert.encoder.layer[2].intermediate.dense.weight)
    assert torch.equal(groups[1].albert_layers[0].ffn.weight, model.bert.encoder.layer[0].intermediate.dense.weight)
    with pytest.raises(Exception, match="--layers must name layers"):
        from_bert.convert(model, [3])


def test_a_smaller_vocabulary_keeps_characters_and_words_in_order(bert):
    model, tokenizer = load(bert)
    albert = from_bert.convert(model, [0, 1, 2]).eval()
    old = tokenizer.get_vocab()
    kept = from_bert.kept_tokens(old, size=len(old) - 9, seen=["zebra"])
    assert "[unused0]" not in kept and "α" not in kept and "##γ" not in kept  # other scripts and unused slots go
    assert "zebra" in kept and "unusedword" not in kept  # seen words first, then file order
    assert sorted(kept, key=old.get) == kept and kept[0] == "[PAD]"
    smaller = from_bert.prune_vocab(albert, tokenizer, len(kept), seen=["zebra"])
    assert albert.config.vocab_size == len(smaller) == len(kept)
    # A text whose tokens all survived: the same tokens, the same embedding rows, the same logits.
    text = "the movie was scary"
    assert smaller.tokenize(text) == tokenizer.tokenize(text)
    full = from_bert.convert(model, [0, 1, 2]).eval()
    with torch.no_grad():
        a = albert(**smaller([text], return_tensors="pt")).logits
        b = full(**tokenizer([text], return_tensors="pt")).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # A dropped word falls back to its characters, not to [UNK].
    assert smaller.tokenize("unusedword") == ["u", *(f"##{c}" for c in "nusedword")]


def test_the_tool_writes_fp16_weights_that_load_and_label_as_fp32(bert, tmp_path):
    from emodraw_batch.inference.classifier import EmotionClassifier

    full, half = tmp_path / "full", tmp_path / "half"
    for folder, extra in ((full, []), (half, ["--half"])):
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "bert_to_albert.py"), str(bert), "--output",
                               str(folder), "--layers", "0,2", *extra], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    weights = lambda folder: (folder / "model.safetensors").stat().st_size  # noqa: E731
    assert weights(half) < 0.6 * weights(full)
    a = EmotionClassifier(str(full), device="cpu", runtime="torch")
    b = EmotionClassifier(str(half), device="cpu", runtime="torch")
    c = EmotionClassifier(str(half), device="cpu", runtime="onnx")
    assert next(b.model.parameters()).dtype == torch.float32
    pa, pb, pc = a(TEXTS).probs, b(TEXTS).probs, c(TEXTS).probs
    assert (pa.argmax(1) == pb.argmax(1)).all() and (pb.argmax(1) == pc.argmax(1)).all()
    assert abs(pa - pb).max() < 5e-3  # fp16 rounding of the weights only
    assert abs(pb - pc).max() < 1e-4  # the same fp32 weights in ONNX Runtime
