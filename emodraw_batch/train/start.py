"""The model a run starts from: a fresh ALBERT, a base checkpoint (loaded once), or DIR/last."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emodraw_batch.errors import ModelError


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every save


def model_labels(model: Any) -> list[str]:
    return [str(model.config.id2label[i]) for i in range(model.config.num_labels)]


def from_scratch(texts: list[str], labels: Sequence[str], size: str, vocab_size: int, max_length: int,
                 seed: int) -> tuple[Any, Any]:
    """A BPE tokenizer trained on `texts` and a randomly initialised ALBERT of `size`."""
    import torch

    from emodraw_batch.train.from_scratch import new_albert, train_tokenizer

    torch.manual_seed(seed)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, kind="bpe")
    tokenizer.model_max_length = max_length
    # Exactly max_length positions: positions never trained must never be used by `run`.
    return tokenizer, new_albert(tokenizer, labels, size, max_length, seed)


def from_base(base: str, labels: Sequence[str], seed: int, allow_pickle: bool) -> tuple[Any, Any, list[str]]:
    """The base checkpoint, loaded once; its head is kept if it knows exactly `labels`, else replaced."""
    from emodraw_batch.inference.loading import load_checkpoint

    tokenizer, model = load_checkpoint(base, allow_pickle=allow_pickle)
    have = model_labels(model)
    if set(have) == set(labels):
        return tokenizer, model, have  # keep the trained head, in its own label order
    replace_head(model, labels, seed)
    return tokenizer, model, list(labels)


def replace_head(model: Any, labels: Sequence[str], seed: int) -> None:
    """A new output layer for `labels` in place of the model's last layer onto its old labels.

    Initialised as transformers initialises a Linear layer (normal with the config's
    initializer_range, zero bias), from `seed`.
    """
    import torch

    old = model.config.num_labels
    heads = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == old]
    if not heads:
        raise ModelError(f"Cannot find the classification layer ({old} outputs) of {type(model).__name__} to replace.")
    name, layer = heads[-1]
    torch.manual_seed(seed)
    head = torch.nn.Linear(layer.in_features, len(labels), bias=layer.bias is not None,
                           device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        head.weight.normal_(0.0, float(getattr(model.config, "initializer_range", 0.02)))
        if head.bias is not None:
            head.bias.zero_()
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, head)
    model.config.num_labels = len(labels)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    if hasattr(model, "num_labels"):
        model.num_labels = len(labels)


def from_folder(folder: str | Path, allow_pickle: bool) -> tuple[Any, Any]:
    from emodraw_batch.inference.loading import load_checkpoint

    return load_checkpoint(str(folder), allow_pickle=allow_pickle)
