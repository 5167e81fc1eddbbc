"""The classifier: load a checkpoint once, then `classifier(texts) -> Prediction`.

torch and transformers are imported lazily here, so the CLI's `--help` and the
input validation never pay for them.
"""

from __future__ import annotations

import itertools
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .batching import pack
from .config import DEFAULT_MODEL
from .errors import ConfigError, ModelError

# Measured on ALBERT-base (bench/, README "Performance"): on a CPU, batches of ~1k tokens keep the
# activations in cache and ran 1.9x faster than batches of 8k (17 vs 9 rows/s, 2 threads).
CPU_BATCH_TOKENS = 1024
MIN_GPU_BATCH_TOKENS = 8192
MAX_GPU_BATCH_TOKENS = 262_144
# Share of the free GPU memory that one forward pass may use for activations; the rest is
# headroom for the allocator's fragmentation and the prefetched inputs.
GPU_MEMORY_FRACTION = 0.5
# Texts per call of the Rust tokenizer: big enough for its thread pool, small enough to bound memory.
ENCODE_CHUNK = 4096


@dataclass(frozen=True)
class Prediction:
    """Per row: probabilities (n, labels) float32, token count after truncation, truncated flag."""

    probs: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray


def column_name(label: str) -> str:
    """`prob_<label>` with the label made safe as a column name ("Very Sad" -> prob_very_sad)."""
    return "prob_" + (re.sub(r"[^0-9a-zA-Z]+", "_", label).strip("_").lower() or "label")


def pad_batch(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) of shape (rows, longest) from rows stored back to back in `flat`."""
    width = int(lengths.max()) if len(lengths) else 0
    position = np.arange(width)
    mask = position[None, :] < lengths[:, None]
    # Positions past a row's end read some valid index and are then overwritten with padding.
    index = np.where(mask, starts[:, None] + position[None, :], 0)
    input_ids = np.where(mask, flat[index] if len(flat) else 0, pad_id).astype(np.int64)
    return input_ids, mask.astype(np.int64)


def input_limits(tokenizer: Any, config: Any, max_length: int) -> tuple[int, int]:
    """(max tokens per text, pad id): never more positions than the model has embeddings for."""
    limit = int(getattr(config, "max_position_embeddings", max_length) or max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return min(max_length, limit), pad_id


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {device} was requested but this torch build sees no CUDA GPU "
                f"(torch {torch.__version__}). Use --device cpu, or install a CUDA build of torch."
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device} does not exist: this machine has {torch.cuda.device_count()} GPU(s). "
                f"Use cuda:0 to cuda:{torch.cuda.device_count() - 1}."
            )
    return device


def resolve_precision(precision: str, device: str) -> str:
    """`auto` is exact fp32 on the CPU and bf16 autocast on CUDA; int8 exists only on the CPU."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    if precision == "int8" and device != "cpu":
        raise ConfigError(
            f"--precision int8 (dynamic int8 quantization) runs only on the CPU, but the device is {device}. "
            "Use --precision bf16 on a GPU, or --device cpu with int8."
        )
    return precision


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); without it bf16 autocast is slower than fp32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no cheap way to know, so assume not
            return False
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def activation_bytes_per_token(config: Any, max_length: int, precision: str) -> int:
    """Peak activation memory of one token in one forward pass (a deliberate over-estimate).

    Inference keeps one layer's activations alive at a time: a few hidden-size tensors, the
    feed-forward intermediate, and one attention row of `max_length` scores per head, times
    the element size (fp32 softmax/LayerNorm upcasts are covered by the factor of 2).
    """
    hidden = int(getattr(config, "hidden_size", 768))
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
    heads = int(getattr(config, "num_attention_heads", 12))
    elements = 6 * hidden + 2 * intermediate + 2 * heads * max_length
    element_bytes = 2 if precision in ("bf16", "fp16") else 4
    return 2 * element_bytes * elements


def gpu_batch_tokens(
    free_bytes: int,
    bytes_per_token: int,
    fraction: float = GPU_MEMORY_FRACTION,
    cap: int = MAX_GPU_BATCH_TOKENS,
    floor: int = MIN_GPU_BATCH_TOKENS,
) -> int:
    """The token budget that fits `fraction` of the free GPU memory, within [floor, cap].

    The cap exists because bigger batches stop paying off once the GPU is saturated, while
    they still delay the first result and grow the pinned host buffers.
    """
    fits = int(free_bytes * fraction) // max(int(bytes_per_token), 1)
    return int(min(cap, max(floor, fits)))


def default_batch_tokens(
    device: str, config: Any = None, max_length: int = 128, precision: str = "bf16"
) -> int:
    """A token budget that fits the device: fixed on CPU, sized to free memory on CUDA."""
    if not device.startswith("cuda"):
        return CPU_BATCH_TOKENS
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return gpu_batch_tokens(free, activation_bytes_per_token(config, max_length, precision))


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every Linear layer (weights int8, activations quantized per batch).

    ALBERT shares one layer across all 12 depths; quantize_dynamic swaps that shared module
    once, so the sharing survives.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao points to torchao; the eager API still works
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _check_local_weights(folder: Path, allow_pickle: bool) -> None:
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
    if pickled and not allow_pickle:
        raise ModelError(
            f"Checkpoint folder {str(folder)!r} has only pickle-based weights ({', '.join(pickled)}); "
            "loading pickle can run arbitrary code, so only .safetensors is loaded by default. "
            "Convert the weights to safetensors, or pass --allow-pickle if you trust this file."
        )
    if not pickled:
        raise ModelError(
            f"Checkpoint folder {str(folder)!r} holds no model weights (*.safetensors). "
            "Pass a folder written by save_pretrained(), or a Hugging Face hub id."
        )


def _in_cache(name: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    except Exception:  # an invalid repo id is simply "not cached"
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe, so an offline machine fails in seconds instead of after minutes of retries."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_checkpoint(name: str, revision: str | None = None, allow_pickle: bool = False) -> tuple[Any, Any]:
    """Load (tokenizer, model) from a local folder or a hub id; safetensors only unless allowed."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder = Path(name).expanduser()
    is_local = folder.exists()
    if is_local:
        if not folder.is_dir():
            raise ModelError(f"--model {name!r} is a file; pass the checkpoint folder that holds config.json.")
        if not (folder / "config.json").is_file():
            raise ModelError(f"--model {name!r} has no config.json; pass a folder written by save_pretrained().")
        _check_local_weights(folder, allow_pickle)
    source = str(folder) if is_local else name
    if not is_local and not _in_cache(name, revision) and not _hub_reachable():
        raise ModelError(
            f"Model {name!r} is not a local folder, is not in the Hugging Face cache, and the hub cannot be reached "
            "(offline machine, firewall, or HF_HUB_OFFLINE=1). Download the checkpoint on a machine with access "
            "(`huggingface-cli download ID --local-dir DIR`) and pass the folder with --model DIR."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForSequenceClassification.from_pretrained(
                source,
                revision=revision,
                use_safetensors=None if allow_pickle else True,
                trust_remote_code=False,
            )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if is_local:
            raise ModelError(f"Could not load the checkpoint folder {source!r}: {first}") from None
        raise ModelError(
            f"Could not load model {name!r} from the Hugging Face hub ({first}). If the hub is unreachable "
            "(offline machine, firewall) download the checkpoint elsewhere with "
            "`huggingface-cli download` and pass its local folder with --model PATH. "
            "If only pickle weights exist, --allow-pickle loads them."
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"Checkpoint {name!r} has no fast (Rust) tokenizer (tokenizer.json); it is required.")
    return tokenizer, model


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
    ) -> None:
        import torch

        self.name = model
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.tokenizer, self.model = load_checkpoint(model, revision, allow_pickle)
        self.model.to(self.device).eval()
        if self.precision == "int8":
            self.model = quantize_int8(self.model)
        config = self.model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.columns = [column_name(label) for label in self.labels]
        if len(set(self.columns)) != len(self.columns):
            raise ModelError(f"Checkpoint {model!r} has labels that clash as column names: {self.labels}.")
        self.max_length, self._pad_id = input_limits(self.tokenizer, config, max_length)
        self.batch_tokens = batch_tokens or default_batch_tokens(self.device, config, self.max_length, self.precision)
        self.revision = revision or getattr(config, "_commit_hash", None)
        self._autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self._cuda = self.device.startswith("cuda")
        self._rust = self._rust_tokenizer()

    def _rust_tokenizer(self) -> Any:
        """A private copy of the Rust tokenizer, set to truncate exactly as `tokenizer(..., truncation=True)`.

        Calling it directly skips the per-row Python that the transformers wrapper spends
        turning every encoding into dicts of lists (about a third of tokenization time); a
        copy, because the wrapper resets the shared one's truncation state on every call.
        """
        from tokenizers import Tokenizer

        rust = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        rust.no_padding()
        rust.enable_truncation(self.max_length, direction=getattr(self.tokenizer, "truncation_side", "right"))
        return rust

    def encode(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids (truncated to max_length) and a truncated flag, in one bulk Rust call.

        Safe to call from a prefetching thread while `forward` runs: the Rust call releases the GIL.
        """
        encode_batch = getattr(self._rust, "encode_batch_fast", self._rust.encode_batch)  # _fast: no offsets
        ids: list[list[int]] = []
        truncated = np.zeros(len(texts), dtype=bool)
        # In chunks: a Rust Encoding (tokens, masks, offsets) weighs ~6 KB for a tweet, so a whole
        # 50k-row window at once would briefly cost ~300 MB; only the ids are kept.
        for start in range(0, len(texts), ENCODE_CHUNK):
            encodings = encode_batch(texts[start : start + ENCODE_CHUNK])
            ids.extend(e.ids for e in encodings)
            truncated[start : start + len(encodings)] = [len(e.overflowing) > 0 for e in encodings]
        return ids, truncated

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        """Probabilities for pre-tokenized rows, in the order given.

        Batches are padded with array operations only (no loop over rows). On CUDA the
        per-batch results stay on the device and come back in one copy per call, so the host
        queues batch k+1 while the GPU still runs batch k.
        """
        import torch

        n = len(ids)
        probs = np.empty((n, len(self.labels)), dtype=np.float32)
        if n == 0:
            return probs
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        starts = np.cumsum(lengths) - lengths
        order, outputs = [], []
        for batch in pack(lengths, self.batch_tokens):
            input_ids, mask = pad_batch(flat, starts[batch], lengths[batch], self._pad_id)
            order.append(batch)
            outputs.append(self._run(input_ids, mask))
        probs[np.concatenate(order)] = torch.cat(outputs).cpu().numpy()
        return probs

    def _to_device(self, array: np.ndarray) -> Any:
        """Host array -> model device. On CUDA through pinned memory, so the copy is asynchronous."""
        import torch

        tensor = torch.from_numpy(array)
        if not self._cuda:
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _run(self, input_ids: np.ndarray, mask: np.ndarray) -> Any:
        """One batch -> fp32 probabilities as a tensor on the model's device (no host sync here)."""
        import torch

        with torch.inference_mode():
            input_ids, mask = self._to_device(input_ids), self._to_device(mask)
            if self._autocast is None:
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            else:
                with torch.autocast("cuda" if self._cuda else "cpu", dtype=self._autocast):
                    logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            # Softmax in fp32 whatever the compute precision.
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
            "max_length": self.max_length,
            "batch_tokens": self.batch_tokens,
        }


@lru_cache(maxsize=2)
def cached_classifier(**kwargs: Any) -> EmotionClassifier:
    """One classifier per process and settings: a worker reuses it for every shard it runs."""
    return EmotionClassifier(**kwargs)
