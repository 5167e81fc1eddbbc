"""Open a checkpoint for labelling: its backend, labels, input limits and tokenizer, in one place.

Three ways, by runtime: torch (transformers, made ready by TorchForward); onnx with an export
cached by an earlier run (no torch or transformers imported at all: start-up); onnx the first
time (loaded with transformers, exported once, only the export kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emodraw_batch.inference.backends import Forward
from emodraw_batch.inference.loading import check_local_weights, input_limits, load_checkpoint, position_limit, resolve_model


@dataclass
class Loaded:
    backend: Forward
    labels: list[str]
    pad_id: int
    max_length: int
    revision: str | None
    tokenizer_json: str
    truncation_side: str
    tokenizer: Any = None  # the transformers tokenizer (None when a cached export was loaded)
    config: Any = None  # the model's config (idem)


def load(model: str, revision: str | None, max_length: int, allow_pickle: bool, device: str, precision: str,
         runtime: str, fast: dict[str, Any]) -> Loaded:
    """The checkpoint `model` ready to run on `device` in `precision` with `runtime` and the fast paths `fast`."""
    from emodraw_batch.inference.backends import onnx_forward

    model, fixed_revision = resolve_model(model)  # `offline`: the packaged folder, a hash of its weights
    cached = onnx_forward.load_cached(model) if runtime == "onnx" else None
    if cached is not None:
        check_local_weights(Path(model).expanduser(), allow_pickle)  # the refusal of the full load
        backend, meta = cached
        return Loaded(backend, list(meta["labels"]), int(meta["pad_id"]), min(max_length, int(meta["max_positions"])),
                      revision or fixed_revision or meta["revision"], backend.tokenizer_json(), meta["truncation_side"])
    loaded = _load_with_transformers(model, revision, max_length, allow_pickle, device, precision, runtime, fast)
    loaded.revision = revision or fixed_revision or loaded.revision
    return loaded


def _load_with_transformers(model: str, revision: str | None, max_length: int, allow_pickle: bool, device: str,
                            precision: str, runtime: str, fast: dict[str, Any]) -> Loaded:
    from emodraw_batch.inference.backends import onnx_forward
    from emodraw_batch.inference.backends.torch_forward import TorchForward, set_attention

    tokenizer, hf_model = load_checkpoint(model, revision, allow_pickle)
    if fast["attn_implementation"]:
        set_attention(hf_model, fast["attn_implementation"])
    hf_model.to(device).eval()
    config = hf_model.config
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    limit, pad_id = input_limits(tokenizer, config, max_length)
    revision = revision or getattr(config, "_commit_hash", None)
    tokenizer_json = tokenizer.backend_tokenizer.to_str()
    side = getattr(tokenizer, "truncation_side", "right")
    if runtime == "onnx":  # the checkpoint's own modules are traced; later runs load the export
        meta = {"labels": labels, "pad_id": pad_id, "revision": revision,
                "max_positions": position_limit(config, max_length), "truncation_side": side}
        backend: Forward = onnx_forward.OnnxForward.export_and_load(hf_model, model, tokenizer_json, meta)
    else:
        backend = TorchForward(hf_model, device, precision, fast)
    return Loaded(backend, labels, pad_id, limit, revision, tokenizer_json, side, tokenizer, config)
