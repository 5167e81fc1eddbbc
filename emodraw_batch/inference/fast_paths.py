"""The GPU fast paths: their settings (defaults, parsing, the exact path) and the pinned staging ring."""

from __future__ import annotations

from typing import Any

import numpy as np

from emodraw_batch.errors import ConfigError

# GPU fast paths (issue #11), each switchable per classifier by the constructor keyword of the same
# name, so that bench/gpu.py can A/B them. EXACT is every path off: today's exact path, and the
# reference that EmotionClassifier.fast_paths_on records differences from (so the exact path's
# record is unchanged).
EXACT: dict[str, Any] = {
    # bf16/fp16: cast the weights to that dtype (True) instead of autocasting fp32 weights (False).
    # The logits are upcast to fp32 before the softmax either way.
    "half_weights": False,
    # CUDA: copy each batch through a ring of reused pinned host buffers (not a new pinned tensor
    # per batch), ids and lengths in one copy; the attention mask is built on the device.
    "staging": False,
    # Pack and pad a window's batches inside encode() (the prefetch thread), so that forward()
    # only copies and launches: host work off the GPU's critical path.
    "prepare_in_encode": False,
    # Round every batch's width up to a multiple of this (length buckets: few distinct shapes for
    # torch.compile / CUDA graphs, tensor-core-friendly widths). 1 = pad to the longest row only.
    "pad_multiple": 1,
    # transformers attention kernel: None keeps the checkpoint's default (sdpa in transformers 5),
    # else "sdpa", "eager", "flex_attention" or "flash_attention_2" (if installed).
    "attn_implementation": None,
    # torch.compile the model: False; True (inductor, default mode); an inductor mode
    # ("reduce-overhead" = CUDA graphs, "max-autotune-no-cudagraphs", ...); or "backend:NAME".
    # Compiled with dynamic batch and sequence dimensions (see torch_forward.compiled), so a new
    # batch shape does not recompile.
    "compile": False,
    # Mask-free batches: a group of rows of one length holding at least this share of the token
    # budget runs in batches of its own, unpadded, with attention_mask=None (SDPA may then take its
    # flash kernel on CUDA; with a padding mask it cannot). 0 = off: every batch packed as before.
    "equal_lengths": 0.0,
}
# The defaults every classifier gets, `emodraw-batch run` and its Dask workers included: on only
# where bench/gpu.py showed that it pays, with labels >= 99.5% equal to fp32's (bench/GPU-results.md).
# `EMODRAW_FAST_PATHS="half_weights=1,staging=1,..."` overrides them at import, in every process of
# a run (Dask workers inherit the environment): a benchmark knob, not a user setting.
FAST_PATH_DEFAULTS: dict[str, Any] = {
    **EXACT,
    # "cuda": on CUDA devices only. H200, bf16, ALBERT-base shape: +3.6% rows/s in both benchmark
    # runs, forward passes 5-11% shorter; labels 99.87% equal to fp32's on both the shipped and the
    # base-shaped model. Not measured on a CPU's bf16, so CPUs keep autocast.
    "half_weights": "cuda",
}
STAGING_SLOTS = 4  # pinned buffers in the ring: a slot is reused only after its copy has finished
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def fast_path_settings(given: dict[str, Any]) -> dict[str, Any]:
    """A classifier's fast paths: the keywords it was given, FAST_PATH_DEFAULTS for those left None, checked."""
    fast = {k: FAST_PATH_DEFAULTS[k] if v is None else v for k, v in given.items()}
    fast["pad_multiple"] = max(int(fast["pad_multiple"]), 1)
    fast["equal_lengths"] = equal_lengths_share(fast["equal_lengths"])
    return fast


def equal_lengths_share(value: Any) -> float:
    """The equal_lengths setting as a share of the token budget in [0, 1] (0: off)."""
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"equal_lengths={value!r}: use a share of the token budget between 0 (off) and 1.")
    return share


def parse_fast_paths(spec: str) -> dict[str, Any]:
    """`"half_weights=1,pad_multiple=8,attn_implementation=eager"` -> typed fast-path settings."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in FAST_PATH_DEFAULTS:
            raise ConfigError(f"Unknown fast path {key!r} in {spec!r}; known: {', '.join(FAST_PATH_DEFAULTS)}.")
        value = value.strip()
        if key == "half_weights" and value.lower() == "cuda":
            out[key] = "cuda"
        elif key in ("half_weights", "staging", "prepare_in_encode"):
            out[key] = value.lower() in ("1", "true", "yes", "on")
        elif key == "pad_multiple":
            out[key] = max(int(value or 1), 1)
        elif key == "equal_lengths":
            out[key] = equal_lengths_share(value or 0)
        elif key == "attn_implementation":
            out[key] = value or None
        else:  # compile
            out[key] = {"": False, "0": False, "false": False, "off": False, "1": True, "true": True}.get(
                value.lower(), value
            )
    return out


def _fast_path_env() -> None:
    import os

    spec = os.environ.get("EMODRAW_FAST_PATHS", "")
    if spec:
        FAST_PATH_DEFAULTS.update(parse_fast_paths(spec))


_fast_path_env()


def bucket_width(width: int, multiple: int) -> int:
    """`width` rounded up to a multiple of `multiple` (1: unchanged)."""
    return -(-int(width) // multiple) * multiple if multiple > 1 else int(width)


class Staging:
    """A ring of reusable host buffers for the host-to-device copy of a batch (ids + lengths).

    On CUDA the buffers are pinned, so the copy is asynchronous; slot i is written again only
    after an event recorded behind its last copy has completed, so a copy in flight never reads
    a buffer being refilled. Without CUDA (tests) the same code runs on ordinary memory, where
    the "copy" is the buffer itself and the model has read it before the next batch.
    """

    def __init__(self, device: str, slots: int = STAGING_SLOTS) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        self.buffers: list[Any] = [None] * slots
        self.events: list[Any] = [None] * slots
        self.next = 0
        self.allocations = 0  # host buffers allocated so far: grows only when a batch outgrows its slot

    def put(self, input_ids: np.ndarray, lengths: np.ndarray) -> tuple[Any, Any]:
        """(input_ids, lengths) as int64 tensors on the device, through the next slot of the ring."""
        import torch

        rows, width = input_ids.shape
        need = rows * width + rows
        i = self.next
        self.next = (i + 1) % len(self.buffers)
        if self.events[i] is not None:
            self.events[i].synchronize()  # the copy that last read this slot is done
        buffer = self.buffers[i]
        if buffer is None or buffer.numel() < need:
            size = max(need, 2 * buffer.numel() if buffer is not None else 0)
            buffer = torch.empty(size, dtype=torch.int64, pin_memory=self.cuda)
            self.buffers[i] = buffer
            self.allocations += 1
        host = buffer.numpy()
        host[: rows * width].reshape(rows, width)[...] = input_ids
        host[rows * width : need] = lengths
        if not self.cuda:
            device = buffer[:need]
        else:
            device = buffer[:need].to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.events[i] = event
        return device[: rows * width].view(rows, width), device[rows * width : need]
