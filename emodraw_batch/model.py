"""The classifier: load a checkpoint once, then `classifier(texts) -> Prediction`.

torch and transformers are imported lazily here, so the CLI's `--help` and the
input validation never pay for them. Where and how precisely it runs is device.py's job,
the GPU fast-path settings fast_paths.py's, and loading a checkpoint loading.py's.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .batching import pack
from .config import DEFAULT_MODEL
from .device import default_batch_tokens, resolve_device, resolve_precision
from .errors import ConfigError, ModelError
from .fast_paths import COMPILE_MODES, EXACT, FAST_PATH_DEFAULTS, Staging, bucket_width
from .loading import check_local_weights, fuse_gelu, input_limits, load_checkpoint, position_limit, quantize_int8

# Texts per call of the Rust tokenizer: big enough for its thread pool, small enough to bound memory.
ENCODE_CHUNK = 4096


@dataclass(frozen=True)
class Prediction:
    """Per row: probabilities (n, labels) float32, token count after truncation, truncated flag."""

    probs: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray


@dataclass(frozen=True)
class Pending:
    """A window whose batches are queued on the device (`submit`); `collect` waits for it.

    `order`: the row index of each output row; `probs`: the probabilities in that order, a numpy
    array, or (CUDA) a pinned host tensor that an asynchronous copy is filling; `done`: the CUDA
    event recorded behind that copy, the window's one host synchronisation (None elsewhere).
    """

    rows: int
    order: np.ndarray
    probs: Any
    done: Any = None


def column_name(label: str) -> str:
    """`prob_<label>` with the label made safe as a column name ("Very Sad" -> prob_very_sad)."""
    return "prob_" + (re.sub(r"[^0-9a-zA-Z]+", "_", label).strip("_").lower() or "label")


def flatten(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat, starts, lengths): rows of token ids stored back to back, the layout `pad_batch` pads from."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return flat, np.cumsum(lengths) - lengths, lengths


def truncating_tokenizer(tokenizer_json: str, max_length: int, side: str) -> Any:
    """A private Rust tokenizer from its JSON, set to truncate exactly as `tokenizer(..., truncation=True)`.

    Calling it directly skips the per-row Python that the transformers wrapper spends turning
    every encoding into dicts of lists (about a third of tokenization time); a private copy,
    because the wrapper resets the shared one's truncation state on every call.
    """
    from tokenizers import Tokenizer

    rust = Tokenizer.from_str(tokenizer_json)
    rust.no_padding()
    rust.enable_truncation(max_length, direction=side)
    return rust


def pad_batch(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) of shape (rows, longest) from rows stored back to back in `flat`."""
    width = int(lengths.max()) if len(lengths) else 0
    position = np.arange(width)
    mask = position[None, :] < lengths[:, None]
    # Positions past a row's end read some valid index and are then overwritten with padding.
    index = np.where(mask, starts[:, None] + position[None, :], 0)
    input_ids = np.where(mask, flat[index] if len(flat) else 0, pad_id).astype(np.int64)
    return input_ids, mask.astype(np.int64)


def mask_kind(model: Any) -> str:
    """How `_attention_mask` hands a padded batch's mask to this model: "sdpa" or "eager" (transformers 5
    takes a ready 4D mask as it is) or "2d" (older transformers, other attention kernels)."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        return "2d"
    kind = getattr(model.config, "_attn_implementation", None)
    return kind if kind in ("sdpa", "eager") else "2d"


class EncodedIds(list):
    """encode()'s token ids: a plain list of lists, which may carry the window's batches ready to run.

    With `prepare_in_encode`, the prefetch thread packs and pads here; forward() uses `batches`
    only if they were made for its own token budget and padding, else it packs again.
    """

    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None  # (rows, input_ids, lengths)
    key: tuple[int, int, int] | None = None  # (batch_tokens, pad_multiple, pad_id) they were made for


class EmotionClassifier:
    """A stateful callable: loads the checkpoint once, then classifies lists of texts.

    Sort, run, unsort: texts are tokenized in bulk, ordered by length, packed
    under the token budget, run under inference_mode and put back in order.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        max_length: int = 128,
        batch_tokens: int | None = None,
        allow_pickle: bool = False,
        runtime: str = "torch",
        half_weights: bool | None = None,
        staging: bool | None = None,
        prepare_in_encode: bool | None = None,
        pad_multiple: int | None = None,
        attn_implementation: str | None = None,
        compile: bool | str | None = None,  # noqa: A002 - the name torch uses
    ) -> None:
        """`runtime` runs the forward pass: torch, onnx (ONNX Runtime: CPU, fp32; onnx_forward.py) or
        auto (onnx where it can run and is installed, else torch). The keywords from `half_weights`
        on are the GPU fast paths (see FAST_PATH_DEFAULTS); None takes the module default. Each
        gives the exact path's labels (tests/test_gpu_paths.py, tests/test_forward_runtimes.py)."""
        from . import onnx_forward

        given = dict(
            half_weights=half_weights,
            staging=staging,
            prepare_in_encode=prepare_in_encode,
            pad_multiple=pad_multiple,
            attn_implementation=attn_implementation,
            compile=compile,
        )
        self.fast = {k: FAST_PATH_DEFAULTS[k] if v is None else v for k, v in given.items()}
        self.fast["pad_multiple"] = max(int(self.fast["pad_multiple"]), 1)
        self.name = model
        self.device = resolve_device(device)
        if self.fast["half_weights"] == "cuda":  # the default: measured to pay on GPUs only
            self.fast["half_weights"] = self.device.startswith("cuda")
        self.precision = resolve_precision(precision, self.device)
        # Refused here, before the slow load, when it cannot run on this device and precision.
        self.runtime = onnx_forward.resolve_runtime(runtime, self.device, self.precision)
        self._cuda = self.device.startswith("cuda")
        self.model: Any = None
        self.tokenizer: Any = None
        self._autocast: Any = None
        self._staging: Staging | None = None
        self._mask_kind = "2d"  # see _attention_mask
        self._onnx: onnx_forward.OnnxForward | None = None
        self._ahead: tuple[list[list[int]], list[Any]] | None = None  # see head_start
        # A local checkpoint exported by an earlier run loads without torch or transformers (start-up).
        cached = onnx_forward.load_cached(model) if self.runtime == "onnx" else None
        if cached is not None:
            check_local_weights(Path(model).expanduser(), allow_pickle)  # the refusal of the full load
            self._onnx, meta = cached
            self.labels, self._pad_id = list(meta["labels"]), int(meta["pad_id"])
            self.max_length = min(max_length, int(meta["max_positions"]))
            self.revision = revision or meta["revision"]
            self._rust = truncating_tokenizer(self._onnx.tokenizer_json(), self.max_length, meta["truncation_side"])
        else:
            self._load_torch(model, revision, max_length, allow_pickle)
        self.columns = [column_name(label) for label in self.labels]
        if len(set(self.columns)) != len(self.columns):
            raise ModelError(f"Checkpoint {model!r} has labels that clash as column names: {self.labels}.")
        config = self.model.config if self.model is not None else None
        self.batch_tokens = batch_tokens or default_batch_tokens(self.device, config, self.max_length, self.precision)

    def _load_torch(self, model: str, revision: str | None, max_length: int, allow_pickle: bool) -> None:
        """Load with transformers; for the onnx runtime, export it once and keep only the export."""
        import torch

        from . import onnx_forward

        self.tokenizer, self.model = load_checkpoint(model, revision, allow_pickle)
        if self.fast["attn_implementation"]:
            self._set_attention(self.fast["attn_implementation"])
        self.model.to(self.device).eval()
        config = self.model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.max_length, self._pad_id = input_limits(self.tokenizer, config, max_length)
        self.revision = revision or getattr(config, "_commit_hash", None)
        tokenizer_json = self.tokenizer.backend_tokenizer.to_str()
        side = getattr(self.tokenizer, "truncation_side", "right")
        self._rust = truncating_tokenizer(tokenizer_json, self.max_length, side)
        if self.runtime == "onnx":  # the checkpoint's own modules are traced; later runs load the export
            meta = {"labels": self.labels, "pad_id": self._pad_id, "revision": self.revision,
                    "max_positions": position_limit(config, max_length), "truncation_side": side}
            self._onnx = onnx_forward.OnnxForward.export_and_load(self.model, model, tokenizer_json, meta)
            self.model = None  # the same path whether the export was cached or made now
            return
        fuse_gelu(self.model)
        if self.precision == "int8":
            self.model = quantize_int8(self.model)
        self._autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if self._autocast is not None and self.fast["half_weights"]:
            self.model.to(self._autocast)  # weights in bf16/fp16; _run upcasts the logits for the softmax
            self._autocast = None
        self._staging = Staging(self.device) if self.fast["staging"] else None
        self._mask_kind = mask_kind(self.model)
        self._model_call = self._compiled(self.fast["compile"]) if self.fast["compile"] else self.model

    def _set_attention(self, name: str) -> None:
        """Switch the loaded model's attention kernel (transformers >= 4.5x: set_attn_implementation)."""
        setter = getattr(self.model, "set_attn_implementation", None)
        if setter is None:
            raise ConfigError(f"This transformers version cannot switch the attention implementation to {name!r}.")
        try:
            setter(name)
        except (ValueError, ImportError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"Attention implementation {name!r} is not available here: {first}") from None

    def _compiled(self, setting: bool | str) -> Any:
        """torch.compile of the model: True/"default" inductor, an inductor mode, or "backend:NAME"."""
        import torch

        if setting is True or setting == "default":
            return torch.compile(self.model)
        if isinstance(setting, str) and setting.startswith("backend:"):
            return torch.compile(self.model, backend=setting.split(":", 1)[1])
        if setting in COMPILE_MODES:
            return torch.compile(self.model, mode=setting)
        raise ConfigError(f"compile={setting!r}: use True, one of {', '.join(COMPILE_MODES)}, or 'backend:NAME'.")

    def encode(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids (truncated to max_length) and a truncated flag, in one bulk Rust call.

        Safe to call from a prefetching thread while `forward` runs: the Rust call releases the GIL.
        """
        encode_batch = getattr(self._rust, "encode_batch_fast", self._rust.encode_batch)  # _fast: no offsets
        ids: list[list[int]] = EncodedIds()
        truncated = np.zeros(len(texts), dtype=bool)
        # In chunks: a Rust Encoding (tokens, masks, offsets) weighs ~6 KB for a tweet, so a whole
        # 50k-row window at once would briefly cost ~300 MB; only the ids are kept.
        for start in range(0, len(texts), ENCODE_CHUNK):
            encodings = encode_batch(texts[start : start + ENCODE_CHUNK])
            ids.extend(e.ids for e in encodings)
            truncated[start : start + len(encodings)] = [len(e.overflowing) > 0 for e in encodings]
        if self.fast["prepare_in_encode"]:
            ids.batches, ids.key = self._prepare(ids), self._batch_key()
        return ids, truncated

    def _batch_key(self) -> tuple[int, int, int]:
        return (int(self.batch_tokens), int(self.fast["pad_multiple"]), int(self._pad_id))

    def _prepare(self, ids: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The rows' batches, in length order: (row indices, padded input ids, lengths).

        With pad_multiple > 1 each batch is padded to its width rounded up (a length bucket);
        the extra positions are padding under a zero mask, so the labels do not change.
        """
        n = len(ids)
        if n == 0:
            return []
        flat, starts, lengths = flatten(ids)
        multiple = self.fast["pad_multiple"]
        # Budget the bucketed widths, so a rounded-up batch still fits the token budget.
        widths = np.where(lengths > 0, -(-lengths // multiple) * multiple, 0) if multiple > 1 else lengths
        batches = []
        for batch in pack(widths, self.batch_tokens):
            input_ids, _ = pad_batch(flat, starts[batch], lengths[batch], self._pad_id)
            width = bucket_width(input_ids.shape[1], multiple)
            if width > input_ids.shape[1]:
                input_ids = np.pad(input_ids, ((0, 0), (0, width - input_ids.shape[1])), constant_values=self._pad_id)
            batches.append((batch, input_ids, lengths[batch]))
        return batches

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        """Probabilities for pre-tokenized rows, in the order given: `collect(submit(ids))`."""
        return self.collect(self.submit(ids))

    def submit(self, ids: list[list[int]]) -> Pending:
        """Queue every batch of these rows on the device and return at once (CUDA) or when done.

        Batches are padded with array operations only (no loop over rows), and nothing in the
        forward pass waits for the GPU: on CUDA the batches' probabilities stay on the device and
        one asynchronous copy brings them back, so the caller can prepare and queue the next window
        while this one runs. Batches that `head_start` already ran for these very ids are taken
        from it, not run again.
        """
        if not ids:
            return Pending(0, np.zeros(0, dtype=np.int64), np.empty((0, len(self.labels)), dtype=np.float32))
        ahead = self._take_ahead(ids)
        order, outputs = [], []
        for k, (batch, input_ids, lengths) in enumerate(self._batches(ids)):
            order.append(batch)
            outputs.append(ahead[k] if k < len(ahead) else self._run_batch(input_ids, lengths))
        return self._pending(len(ids), np.concatenate(order), outputs)

    def collect(self, pending: Pending) -> np.ndarray:
        """The probabilities of a submitted window, back in the rows' order (waits for its copy)."""
        if pending.done is not None:
            pending.done.synchronize()
        probs = np.empty((pending.rows, len(self.labels)), dtype=np.float32)
        host = pending.probs if isinstance(pending.probs, np.ndarray) else pending.probs.numpy()
        probs[pending.order] = host
        return probs

    def head_start(self, ids: list[list[int]], stop: Callable[[], bool]) -> int:
        """Run the batches `forward(ids)` would run, in its order, until `stop()` says so; returns how many ran.

        For the time before an orchestrator is ready to call `forward`: the next `forward` of
        the same ids (compared by content) takes these outputs instead of computing them again,
        so its result is exactly what it would have been. Only the latest head start is kept.
        """
        outputs: list[Any] = []
        for _batch, input_ids, lengths in self._batches(ids):
            if stop():
                break
            outputs.append(self._run_batch(input_ids, lengths))
        self._ahead = (ids, outputs) if outputs else None
        return len(outputs)

    def _take_ahead(self, ids: list[list[int]]) -> list[Any]:
        ahead, self._ahead = self._ahead, None
        return ahead[1] if ahead is not None and ahead[0] == ids else []

    def _batches(self, ids: list[list[int]]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each batch in run order: its row indices, padded ids, and the rows' lengths (the mask is made from them)."""
        if not (self.fast["prepare_in_encode"] or self.fast["pad_multiple"] > 1 or self._staging is not None):
            flat, starts, lengths = flatten(ids)
            for batch in pack(lengths, self.batch_tokens):
                input_ids, _mask = pad_batch(flat, starts[batch], lengths[batch], self._pad_id)
                yield batch, input_ids, lengths[batch]
            return
        ready = getattr(ids, "batches", None) if getattr(ids, "key", None) == self._batch_key() else None
        yield from ready if ready is not None else self._prepare(ids)

    def _run_batch(self, input_ids: np.ndarray, lengths: np.ndarray) -> Any:
        """One batch -> fp32 probabilities: a tensor on the model's device (no host sync), or numpy from ONNX Runtime."""
        if self._onnx is not None:
            return self._onnx(input_ids, (np.arange(input_ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64))
        import torch

        with torch.inference_mode():
            if self._staging is not None:  # ids and lengths through the reused pinned buffers, one copy
                ids, lengths_on_device = self._staging.put(input_ids, lengths)
            else:
                ids, lengths_on_device = self._to_device(input_ids), self._to_device(lengths)
            return self._forward_probs(ids, self._attention_mask(lengths, lengths_on_device, input_ids.shape[1]))

    def _attention_mask(self, lengths: np.ndarray, on_device: Any, width: int) -> Any:
        """The batch's attention mask for the model, made on its device without a host synchronisation.

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
        if self._mask_kind == "2d":
            return padding.to(torch.int64)
        full = (position[None, None, :, None] >= 0) & padding[:, None, None, :]  # (rows, 1, query, key)
        if self._mask_kind == "sdpa":
            return full
        dtype = self.model.dtype  # eager: added to the scores in the embeddings' dtype
        return torch.where(full, torch.zeros((), device=full.device, dtype=dtype), torch.finfo(dtype).min)

    def _pending(self, rows: int, order: np.ndarray, outputs: list[Any]) -> Pending:
        """The batches' probabilities on their way to the host: numpy at once, or one asynchronous CUDA copy."""
        if self._onnx is not None:
            return Pending(rows, order, np.concatenate(outputs))  # (and torch need not be imported at all)
        import torch

        probs = torch.cat(outputs)
        if not self._cuda:
            return Pending(rows, order, probs.numpy())
        host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
        host.copy_(probs, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return Pending(rows, order, host, done)

    def _to_device(self, array: np.ndarray) -> Any:
        """Host array -> model device. On CUDA through pinned memory, so the copy is asynchronous."""
        import torch

        tensor = torch.from_numpy(array)
        if not self._cuda:
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _forward_probs(self, input_ids: Any, mask: Any) -> Any:
        import torch

        if self._autocast is None:
            logits = self._model_call(input_ids=input_ids, attention_mask=mask).logits
        else:
            with torch.autocast("cuda" if self._cuda else "cpu", dtype=self._autocast):
                logits = self._model_call(input_ids=input_ids, attention_mask=mask).logits
        # Softmax in fp32 whatever the compute precision (half weights give bf16/fp16 logits).
        return logits.float().softmax(-1)

    def __call__(self, texts: list[str]) -> Prediction:
        ids, truncated = self.encode(texts)
        n_tokens = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
        return Prediction(self.forward(ids), n_tokens, truncated)

    def describe(self) -> dict[str, Any]:
        """What went into the labels: recorded in the manifest and the Parquet metadata."""
        return {
            "model": self.name,
            "revision": self.revision,
            "labels": self.labels,
            "device": self.device,
            "precision": self.precision,
            "runtime": self.runtime,
            "max_length": self.max_length,
            "batch_tokens": self.batch_tokens,
            # Only fast paths that are on, so the exact path's record is unchanged.
            **({"fast_paths": on} if (on := self.fast_paths_on()) else {}),
        }

    def fast_paths_on(self) -> dict[str, Any]:
        """The fast paths that differ from the exact path (see FAST_PATH_DEFAULTS), as set here."""
        on = {k: v for k, v in self.fast.items() if v != EXACT[k]}
        if self.runtime == "onnx":  # the torch-only paths do not run there
            on = {k: v for k, v in on.items() if k in ("prepare_in_encode", "pad_multiple")}
        if on.get("half_weights") and self.precision not in ("bf16", "fp16"):
            on.pop("half_weights")  # nothing to cast at fp32 / int8
        return on


# This process's classifiers by settings, and how often each was loaded: a worker loads once.
_CACHE: dict[tuple[tuple[str, Any], ...], EmotionClassifier] = {}
_LOADS: Counter[tuple[tuple[str, Any], ...]] = Counter()
CACHE_SIZE = 2


def cached_classifier(**settings: Any) -> EmotionClassifier:
    """One classifier per process and settings: a worker reuses it for every shard it runs."""
    key = tuple(sorted(settings.items()))
    if key not in _CACHE:
        while len(_CACHE) >= CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))  # the oldest: a process rarely needs more than one model
        _CACHE[key] = EmotionClassifier(**settings)
        _LOADS[key] += 1
    return _CACHE[key]


def load_count(**settings: Any) -> int:
    """How often this process has loaded the classifier for these settings (1: loaded once, reused)."""
    return _LOADS[tuple(sorted(settings.items()))]


def clear_cache() -> None:
    _CACHE.clear()
    _LOADS.clear()
