"""The torch backend: transformers on CPU or CUDA, every precision and GPU fast path.

One batch in, fp32 probabilities out as a tensor on the model's device: nothing here waits for
the GPU. The attention mask is made on the device from lengths the host already knows, so
transformers never has to ask the device whether a batch is padded (a host sync per batch).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emodraw_batch.errors import ConfigError
from emodraw_batch.inference.backends import Pending
from emodraw_batch.inference.fast_paths import COMPILE_MODES, Staging
from emodraw_batch.inference.loading import fuse_gelu, quantize_int8


class TorchForward:
    """A loaded model made ready to run: fused GELU, int8 or bf16/fp16 (autocast or half weights),
    the pinned staging ring, torch.compile; `run` one batch, `pending` a window's results."""

    def __init__(self, model: Any, device: str, precision: str, fast: dict[str, Any]) -> None:
        import torch

        self.device = device
        self.cuda = device.startswith("cuda")
        fuse_gelu(model)
        if precision == "int8":
            model = quantize_int8(model)
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if self.autocast is not None and fast["half_weights"]:
            model.to(self.autocast)  # weights in bf16/fp16; forward_probs upcasts the logits for the softmax
            self.autocast = None
        self.model = model
        self.staging = Staging(device) if fast["staging"] else None
        self.mask_kind = mask_kind(model)
        self.model_call = compiled(model, fast["compile"]) if fast["compile"] else model

    def run(self, input_ids: np.ndarray, lengths: np.ndarray) -> Any:
        """One batch -> fp32 probabilities on the model's device (no host sync).

        Compiled, a one-row batch runs as two copies of its row (the first result kept): Dynamo
        specialises a size of 1, so it would compile a graph of its own, mid-window, for the odd
        one-row batch at a window's end.
        """
        import torch

        if self.model_call is not self.model and len(lengths) == 1:
            return self.run(np.repeat(input_ids, 2, axis=0), np.repeat(lengths, 2))[:1]
        with torch.inference_mode():
            if self.staging is not None:  # ids and lengths through the reused pinned buffers, one copy
                ids, on_device = self.staging.put(input_ids, lengths)
            else:
                ids, on_device = self.to_device(input_ids), self.to_device(lengths)
            return self.forward_probs(ids, self.attention_mask(lengths, on_device, input_ids.shape[1]))

    def attention_mask(self, lengths: np.ndarray, on_device: Any, width: int) -> Any:
        """The batch's attention mask, made on the model's device without a host synchronisation.

        None when no row is padded (the host knows it from `lengths`): what transformers itself
        passes on then, but only after asking the device with `padding_mask.all()`, one host sync
        per batch. Otherwise, with transformers 5 and sdpa or eager attention, the 4D mask it would
        build from the 2D one, element for element (masking_utils.sdpa_mask / eager_mask), which it
        takes as it is; else the 2D mask, as before.
        """
        import torch

        if len(lengths) and int(lengths.min()) == width:
            return None
        position = torch.arange(width, device=on_device.device)
        padding = position[None, :] < on_device[:, None]
        if self.mask_kind == "2d":
            return padding.to(torch.int64)
        full = (position[None, None, :, None] >= 0) & padding[:, None, None, :]  # (rows, 1, query, key)
        if self.mask_kind == "sdpa":
            return full
        dtype = self.model.dtype  # eager: added to the scores in the embeddings' dtype
        return torch.where(full, torch.zeros((), device=full.device, dtype=dtype), torch.finfo(dtype).min)

    def forward_probs(self, input_ids: Any, mask: Any) -> Any:
        import torch

        if self.autocast is None:
            logits = self.model_call(input_ids=input_ids, attention_mask=mask).logits
        else:
            with torch.autocast("cuda" if self.cuda else "cpu", dtype=self.autocast):
                logits = self.model_call(input_ids=input_ids, attention_mask=mask).logits
        # Softmax in fp32 whatever the compute precision (half weights give bf16/fp16 logits).
        return logits.float().softmax(-1)

    def pending(self, rows: int, order: np.ndarray, outputs: list[Any]) -> Pending:
        """The batches' probabilities on their way to the host: at once on the CPU, one asynchronous copy on CUDA."""
        import torch

        probs = torch.cat(outputs)
        if not self.cuda:
            return Pending(rows, order, probs.numpy())
        host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
        host.copy_(probs, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return Pending(rows, order, host, done)

    def to_device(self, array: np.ndarray) -> Any:
        """Host array -> model device. On CUDA through pinned memory, so the copy is asynchronous."""
        import torch

        tensor = torch.from_numpy(array)
        if not self.cuda:
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)


def mask_kind(model: Any) -> str:
    """How a padded batch's mask goes to this model: "sdpa" or "eager" (transformers 5 takes a ready
    4D mask as it is) or "2d" (older transformers, other attention kernels)."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        return "2d"
    kind = getattr(model.config, "_attn_implementation", None)
    return kind if kind in ("sdpa", "eager") else "2d"


def set_attention(model: Any, name: str) -> None:
    """Switch a loaded model's attention kernel (transformers >= 4.5x: set_attn_implementation)."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None:
        raise ConfigError(f"This transformers version cannot switch the attention implementation to {name!r}.")
    try:
        setter(name)
    except (ValueError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"Attention implementation {name!r} is not available here: {first}") from None


def compiled(model: Any, setting: bool | str) -> Any:
    """torch.compile of the model: True/"default" inductor, an inductor mode, or "backend:NAME".

    With dynamic shapes (`dynamic=True`): every batch has its own rows x width, and a graph
    specialised to one shape would be compiled again for the next (Dynamo's automatic dynamic
    shapes would only switch after a second compile, then a third for the mask-free variant).
    Compiled once with symbolic batch and sequence sizes, a window of any widths reuses it; what
    still compiles a graph of its own is a change of kind, not of size: a batch with or without a
    mask (a one-row batch, which Dynamo would specialise, runs as two rows: `TorchForward.run`).
    What compile buys is inductor's fusion of what ALBERT runs as separate passes over the
    activations: each LayerNorm with the residual add and bias before it, the scaling and softmax
    of the eager attention, the GELU.
    """
    import torch

    if setting is True or setting == "default":
        return torch.compile(model, dynamic=True)
    if isinstance(setting, str) and setting.startswith("backend:"):
        return torch.compile(model, backend=setting.split(":", 1)[1], dynamic=True)
    if setting in COMPILE_MODES:
        return torch.compile(model, mode=setting, dynamic=True)
    raise ConfigError(f"compile={setting!r}: use True, one of {', '.join(COMPILE_MODES)}, or 'backend:NAME'.")
