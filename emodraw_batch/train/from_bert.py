"""An ALBERT made from a BERT checkpoint: the same layers, fewer of them, a smaller embedding.

ALBERT's layer is BERT's (post-LayerNorm attention and feed-forward); what ALBERT adds is a
factorised embedding (vocabulary x E, then an E -> H projection) and layers that may share
weights. With one layer group per layer (`num_hidden_groups = num_hidden_layers`) nothing is
shared, so a pretrained BERT (here all-MiniLM-L6-v2) becomes an AlbertForSequenceClassification
that `run`, ONNX export and `train --base` load like any ALBERT, keeping what the BERT learnt.

    layers          which BERT layers to keep, in order (dropping some is the usual start of a
                    smaller student: DistilBERT keeps every other one)
    embedding_size  None keeps BERT's (exact: the same logits); smaller cuts the vocabulary
                    table's size by H/E, and the small embedding is fitted to reproduce BERT's
                    (LayerNorm-ed) embedding output, so the layers above get what they expect

Used by tools/bert_to_albert.py; the shipped model was made with it (docs/training.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
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


def albert_config(bert: Any, layers: Sequence[int], embedding_size: int, labels: Sequence[str]) -> Any:
    """The ALBERT config with BERT's widths, `len(layers)` unshared layers and the given embedding."""
    from transformers import AlbertConfig

    c = bert.config
    return AlbertConfig(
        vocab_size=c.vocab_size, embedding_size=embedding_size, hidden_size=c.hidden_size,
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


def convert(bert: Any, layers: Sequence[int], embedding_size: int | None = None, fit_steps: int = 3000,
            seed: int = 0) -> Any:
    """An AlbertForSequenceClassification holding `bert`'s chosen layers (and head, if it has one)."""
    import torch
    from transformers import AlbertForSequenceClassification

    depth = bert.config.num_hidden_layers
    if not layers or any(not 0 <= i < depth for i in layers):
        raise ConfigError(f"--layers must name layers of the BERT (0..{depth - 1}); received {list(layers)}.")
    hidden = bert.config.hidden_size
    size = embedding_size or hidden
    labels = emotion_head(bert) or list(EMOTIONS)
    torch.manual_seed(seed)
    albert = AlbertForSequenceClassification(albert_config(bert, layers, size, labels)).eval()
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
    if emotion_head(bert):
        target["classifier.weight"], target["classifier.bias"] = source["classifier.weight"], source["classifier.bias"]
    albert.load_state_dict(target)
    embeddings = getattr(bert, "bert", bert).embeddings
    if size == hidden:
        copy_embeddings(embeddings, albert)
    else:
        fit_embeddings(embeddings, albert, fit_steps, seed)
    return albert


def copy_embeddings(embeddings: Any, albert: Any) -> None:
    """E = H: BERT's tables and LayerNorm as they are, and an identity projection (exact)."""
    import torch

    mine = albert.albert.embeddings
    with torch.no_grad():
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
            getattr(mine, name).load_state_dict(getattr(embeddings, name).state_dict())
        mapping = albert.albert.encoder.embedding_hidden_mapping_in
        mapping.weight.copy_(torch.eye(mapping.weight.shape[0]))
        mapping.bias.zero_()


def sample_pairs(vocab: int, longest: int, n: int, generator: Any) -> tuple[Any, Any]:
    """Random (token, position) pairs: every token equally likely, so rare ones are fitted as well
    as frequent ones; positions mostly within the first 128, where short texts live."""
    import torch

    ids = torch.randint(vocab, (n,), generator=generator)
    positions = torch.randint(min(128, longest), (n,), generator=generator)
    far = torch.rand(n, generator=generator) < 0.2
    positions[far] = torch.randint(longest, (int(far.sum()),), generator=generator)
    return ids, positions


def embed(module: Any, ids: Any, positions: Any) -> Any:
    """An embedding module's sum of word, position and type-0 vectors, before its LayerNorm."""
    import torch

    return module.word_embeddings(ids) + module.position_embeddings(positions) \
        + module.token_type_embeddings(torch.zeros_like(ids))


def fit_embeddings(embeddings: Any, albert: Any, steps: int, seed: int) -> float:
    """E < H: BERT's embedding output LN_H(w + p + t) from ALBERT's proj(LN_E(w' + p' + t')).

    Start in closed form: centring over the H dimensions is linear, so with P (H x E) the main
    directions of the centred sums, w' = P'Cw (and p', t' alike) and proj = diag(gamma) P sqrt(H/E),
    bias beta, give gamma * P P'z + beta for BERT's normalised z. Then fit all of it (tables,
    LayerNorm, projection) to BERT's output on random (token, position) pairs. Returns the
    final mean squared error.
    """
    import torch

    mine, mapping = albert.albert.embeddings, albert.albert.encoder.embedding_hidden_mapping_in
    hidden, size = embeddings.word_embeddings.weight.shape[1], mine.word_embeddings.weight.shape[1]
    vocab, longest = embeddings.word_embeddings.weight.shape[0], embeddings.position_embeddings.weight.shape[0]
    generator = torch.Generator().manual_seed(seed)
    centre = torch.eye(hidden) - 1.0 / hidden
    with torch.no_grad():
        sums = embed(embeddings, *sample_pairs(vocab, longest, 50_000, generator)) @ centre
        basis = torch.linalg.svd(sums, full_matrices=False).Vh[:size].T  # H x E
        down = centre @ basis
        mine.word_embeddings.weight.copy_(embeddings.word_embeddings.weight @ down)
        mine.position_embeddings.weight.copy_(embeddings.position_embeddings.weight @ down)
        mine.token_type_embeddings.weight.copy_(embeddings.token_type_embeddings.weight @ down)
        mine.LayerNorm.reset_parameters()
        mapping.weight.copy_(embeddings.LayerNorm.weight[:, None] * basis * (hidden / size) ** 0.5)
        mapping.bias.copy_(embeddings.LayerNorm.bias)
    params = [*mine.parameters(), *mapping.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        ids, positions = sample_pairs(vocab, longest, 8192, generator)
        with torch.no_grad():
            want = embeddings.LayerNorm(embed(embeddings, ids, positions))
        loss = torch.nn.functional.mse_loss(mapping(mine.LayerNorm(embed(mine, ids, positions))), want)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return float(loss.detach())


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


def save_albert(albert: Any, tokenizer: Any, output: str | Path, half: bool = False) -> None:
    """Write the checkpoint; `half` stores fp16 weights (half the bytes; loading makes them fp32)."""
    import torch

    model = albert.to(torch.float16) if half else albert
    model.save_pretrained(str(output))
    tokenizer.save_pretrained(str(output))
