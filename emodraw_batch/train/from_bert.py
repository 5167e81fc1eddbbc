"""An ALBERT made from a BERT checkpoint: the same layers (some of them), a smaller vocabulary.

ALBERT's layer is BERT's (post-LayerNorm attention and feed-forward); what ALBERT adds is a
factorised embedding (vocabulary x E, then an E -> H projection) and layers that may share
weights. With one layer group per layer (`num_hidden_groups = num_hidden_layers`) nothing is
shared, so a pretrained BERT (here all-MiniLM-L6-v2) becomes an AlbertForSequenceClassification
that `run`, ONNX export and `train --base` load like any ALBERT, keeping what the BERT learnt.

    layers          which BERT layers to keep, in order (dropping some is the usual start of a
                    smaller student: DistilBERT keeps every other one)
    prune_vocab     fewer tokens: the training texts' own first, then BERT's most frequent

The embedding stays H wide (E = H, an identity projection): with every layer and token kept the
ALBERT gives the BERT's logits. A factorised E < H table is what ALBERT was pretrained with, but
MiniLM's is not low-rank (128 of its 384 directions hold 74% of the variance of its word +
position sums; fitted, the layers' outputs kept a cosine of 0.6 to the BERT's), so the size is
cut by the vocabulary instead, which cost no validation accuracy (docs/training.md).

Used by tools/bert_to_albert.py; the shipped model was made with it (docs/training.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emodraw_batch.emotions import EMOTIONS
from emodraw_batch.errors import ConfigError

# BERT layer parameter -> the ALBERT layer's, both relative to one layer.
LAYER_NAMES = {
    "attention.self.query": "attention.query",
    "attention.self.key": "attention.key",
    "attention.self.value": "attention.value",
    "attention.output.dense": "attention.dense",
    "attention.output.LayerNorm": "attention.LayerNorm",
    "intermediate.dense": "ffn",
    "output.dense": "ffn_output",
    "output.LayerNorm": "full_layer_layer_norm",
}


def albert_config(bert: Any, layers: Sequence[int], labels: Sequence[str]) -> Any:
    """The ALBERT config with BERT's widths (the embedding's too) and `len(layers)` unshared layers."""
    from transformers import AlbertConfig

    c = bert.config
    return AlbertConfig(
        vocab_size=c.vocab_size, embedding_size=c.hidden_size, hidden_size=c.hidden_size,
        num_hidden_layers=len(layers), num_hidden_groups=len(layers), inner_group_num=1,
        num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
        hidden_act=c.hidden_act, max_position_embeddings=c.max_position_embeddings,
        type_vocab_size=c.type_vocab_size, layer_norm_eps=c.layer_norm_eps, pad_token_id=c.pad_token_id,
        hidden_dropout_prob=c.hidden_dropout_prob, attention_probs_dropout_prob=c.attention_probs_dropout_prob,
        classifier_dropout_prob=0.1, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
    )


def emotion_head(bert: Any) -> list[str] | None:
    """The BERT's labels when it is an emotion classifier (its head is kept), else None."""
    names = [bert.config.id2label[i] for i in range(len(bert.config.id2label))]
    has_head = hasattr(bert, "classifier") and bert.classifier.weight.shape[0] == len(names)
    return names if has_head and sorted(names) == sorted(EMOTIONS) else None


def convert(bert: Any, layers: Sequence[int], seed: int = 0) -> Any:
    """An AlbertForSequenceClassification holding `bert`'s chosen layers (and head, if it has one)."""
    import torch
    from transformers import AlbertForSequenceClassification

    depth = bert.config.num_hidden_layers
    if not layers or any(not 0 <= i < depth for i in layers):
        raise ConfigError(f"--layers must name layers of the BERT (0..{depth - 1}); received {list(layers)}.")
    head = emotion_head(bert)
    labels = head or list(EMOTIONS)
    torch.manual_seed(seed)
    albert = AlbertForSequenceClassification(albert_config(bert, layers, labels)).eval()
    source = bert.state_dict()
    prefix = "bert." if any(k.startswith("bert.") for k in source) else ""
    target = albert.state_dict()
    for new, old in enumerate(layers):
        for b_name, a_name in LAYER_NAMES.items():
            for part in ("weight", "bias"):
                target[f"albert.encoder.albert_layer_groups.{new}.albert_layers.0.{a_name}.{part}"] = \
                    source[f"{prefix}encoder.layer.{old}.{b_name}.{part}"]
    if f"{prefix}pooler.dense.weight" in source:
        target["albert.pooler.weight"] = source[f"{prefix}pooler.dense.weight"]
        target["albert.pooler.bias"] = source[f"{prefix}pooler.dense.bias"]
    if head:
        target["classifier.weight"], target["classifier.bias"] = source["classifier.weight"], source["classifier.bias"]
    albert.load_state_dict(target)
    copy_embeddings(getattr(bert, "bert", bert).embeddings, albert)
    return albert


def copy_embeddings(embeddings: Any, albert: Any) -> None:
    """BERT's tables and LayerNorm as they are (E = H), and an identity projection: exact."""
    import torch

    mine = albert.albert.embeddings
    with torch.no_grad():
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
            getattr(mine, name).load_state_dict(getattr(embeddings, name).state_dict())
        mapping = albert.albert.encoder.embedding_hidden_mapping_in
        mapping.weight.copy_(torch.eye(mapping.weight.shape[0]))
        mapping.bias.zero_()


def latin(token: str) -> bool:
    """Whether a token is written in Latin letters, digits, punctuation or symbols (no other script)."""
    import unicodedata

    return all(ord(c) < 0x250 or unicodedata.category(c)[0] in "PSZ" for c in token.removeprefix("##"))


def kept_tokens(vocab: dict[str, int], size: int, seen: Sequence[str] = ()) -> list[str]:
    """The tokens a smaller vocabulary keeps, in their old order: the special ones, every Latin
    character alone and as a word piece (so any English text still tokenizes, into shorter
    pieces where a word was dropped), the `seen` ones (used by the training texts), then words
    and pieces in the file's order, which for BERT's vocab.txt is by frequency, until `size`.
    Other scripts and [unused] slots go."""
    first = {t: None for t in seen if t in vocab}  # ordered, and a set for the test below
    ordered = [*first, *(t for t in sorted(vocab, key=vocab.get) if t not in first)]
    special = [t for t in ordered if t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    chars = [t for t in ordered if len(t.removeprefix("##")) == 1 and latin(t) and t not in special]
    keep = set(special) | set(chars)
    if len(keep) > size:
        raise ConfigError(f"--vocab-size {size} is smaller than the {len(keep)} special and single-character tokens.")
    for token in ordered:
        if len(keep) >= size:
            break
        if not token.startswith("[unused") and latin(token):
            keep.add(token)
    return sorted(keep, key=vocab.get)


def frequent_tokens(tokenizer: Any, texts: Sequence[str], at_least: int = 2) -> list[str]:
    """The tokens the texts use at least `at_least` times, most used first."""
    from collections import Counter

    counts = Counter(i for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for i in ids)
    return [tokenizer.convert_ids_to_tokens(i) for i, n in counts.most_common() if n >= at_least]


def prune_vocab(albert: Any, tokenizer: Any, size: int, seen: Sequence[str] = ()) -> Any:
    """Keep `size` tokens (kept_tokens): the embedding rows gathered, a new tokenizer returned."""
    import torch
    from transformers import BertTokenizer

    old = tokenizer.get_vocab()
    tokens = kept_tokens(old, size, seen)
    rows = torch.tensor([old[t] for t in tokens])
    table = albert.albert.embeddings.word_embeddings
    with torch.no_grad():
        smaller = torch.nn.Embedding(len(tokens), table.weight.shape[1], padding_idx=0)
        smaller.weight.copy_(table.weight[rows])
    albert.albert.embeddings.word_embeddings = smaller
    albert.config.vocab_size = len(tokens)
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True,
                         model_max_length=tokenizer.model_max_length)
