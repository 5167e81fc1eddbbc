"""The classifier: load a checkpoint once, then `classifier(texts) -> Prediction`.

torch and transformers are imported lazily here, so the CLI's `--help` and the
input validation never pay for them.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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

# GPU fast paths (issue #11), each switchable per classifier by the constructor keyword of the same
# name, so that bench/gpu.py can A/B them. These module values are the defaults that every
# classifier gets, `emodraw-batch run` and its Dask workers included; none has been measured on a
# GPU yet, so all are off (today's exact path) until bench/gpu.py shows which pays.
# `EMODRAW_FAST_PATHS="half_weights=1,staging=1,..."` overrides them at import, in every process of
# a run (Dask workers inherit the environment): a benchmark knob, not a user setting.
FAST_PATH_DEFAULTS: dict[str, Any] = {
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
    "compile": False,
}
STAGING_SLOTS = 4  # pinned buffers in the ring: a slot is reused only after its copy has finished
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def parse_fast_paths(spec: str) -> dict[str, Any]:
    """`"half_weights=1,pad_multiple=8,attn_implementation=eager"` -> typed fast-path settings."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in FAST_PATH_DEFAULTS:
            raise ConfigError(f"Unknown fast path {key!r} in {spec!r}; known: {', '.join(FAST_PATH_DEFAULTS)}.")
        value = value.strip()
        if key in ("half_weights", "staging", "prepare_in_encode"):
            out[key] = value.lower() in ("1", "true", "yes", "on")
        elif key == "pad_multiple":
            out[key] = max(int(value or 1), 1)
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


def bucket_width(width: int, multiple: int) -> int:
    """`width` rounded up to a multiple of `multiple` (1: unchanged)."""
    return -(-int(width) // multiple) * multiple if multiple > 1 else int(width)


class EncodedIds(list):
    """encode()'s token ids: a plain list of lists, which may carry the window's batches ready to run.

    With `prepare_in_encode`, the prefetch thread packs and pads here; forward() uses `batches`
    only if they were made for its own token budget and padding, else it packs again.
    """

    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None  # (rows, input_ids, lengths)
    key: tuple[int, int, int] | None = None  # (batch_tokens, pad_multiple, pad_id) they were made for


class _Staging:
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


def input_limits(tokenizer: Any, config: Any, max_length: int) -> tuple[int, int]:
    """(max tokens per text, pad id): never more positions than the model has embeddings for."""
    limit = int(getattr(config, "max_position_embeddings", max_length) or max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return min(max_length, limit), pad_id


def no_gpu_here() -> bool:
    """True when this Linux machine surely has no GPU torch could use: no NVIDIA, ROCm or WSL GPU device node.

    Lets device `auto` resolve to the CPU without importing torch (~3 s of start-up on 2 cores).
    Anywhere else (other systems, or a device node present) torch is asked.
    """
    import glob
    import sys

    if not sys.platform.startswith("linux"):
        return False
    return not (glob.glob("/dev/nvidia[0-9]*") or Path("/dev/kfd").exists() or Path("/dev/dxg").exists())


def resolve_device(device: str) -> str:
    if device == "auto" and no_gpu_here():
        return "cpu"
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


class PrecisionWarning(UserWarning):
    """A precision that works but is a poor choice on this machine (e.g. bf16 on a CPU without bf16 units)."""


def resolve_precision(precision: str, device: str, cpuinfo: str | None = None) -> str:
    """The precision that runs: `auto` and `fast` resolved for `device` (and this CPU).

    `auto` is exact fp32 on the CPU and bf16 autocast on CUDA. `fast` is the fastest precision
    that keeps >= 99% of fp32's labels (bench/CPU.md): bf16 on CUDA and on CPUs with native bf16
    (AVX512-BF16, AMX), else int8 where torch has its x86 int8 kernels, else fp32. int8 exists only on
    the CPU. A half precision on a CPU without it is allowed but warned about (`half_precision_advice`).
    """
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    if precision == "fast":
        if device.startswith("cuda") or cpu_has_bf16(cpuinfo):
            return "bf16"
        return "int8" if cpu_has_int8() else "fp32"
    if precision == "int8" and device != "cpu":
        raise ConfigError(
            f"--precision int8 (dynamic int8 quantization) runs only on the CPU, but the device is {device}. "
            "Use --precision bf16 on a GPU, or --device cpu with int8."
        )
    advice = half_precision_advice(precision, device, cpuinfo)
    if advice:
        warnings.warn(advice, PrecisionWarning, stacklevel=2)
    return precision


def half_precision_advice(precision: str, device: str, cpuinfo: str | None = None) -> str | None:
    """Why bf16/fp16 on this CPU is a trap and what to use instead; None when it is not one.

    A CPU without native bf16 (AVX2-only, or AVX-512 without AVX512-BF16) emulates it: on a
    2-core AVX2 EPYC, bf16 ran ~4x slower than fp32 (issue #14; bench/CPU.md). Not refused:
    the labels are right, and a job begun in bf16 (e.g. on a GPU) must resume in bf16.
    """
    if device != "cpu" or precision not in ("bf16", "fp16"):
        return None
    flag = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}[precision]
    if cpu_flags(cpuinfo) & set(flag):
        return None
    instead = resolve_precision("fast", "cpu", cpuinfo)
    return (
        f"--precision {precision} on the CPU needs native {precision} units ({' or '.join(f.upper() for f in flag)}), "
        f"which this CPU lacks, so it is emulated and slower than fp32 (about 4x slower on an AVX2-only CPU). "
        f"Use --precision fast (here: {instead}) for speed with >= 99% of fp32's labels, or --precision fp32 "
        "(the CPU default) for exact labels."
    )


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read, e.g. not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    return set(cpuinfo.split())


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); without it bf16 autocast is slower than fp32."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def cpu_has_int8() -> bool:
    """Whether torch runs dynamic int8 on this CPU with its x86 kernels (fbgemm: AVX2 or newer).

    Only x86 is measured (bench/CPU.md); elsewhere `fast` stays fp32 rather than guess.
    """
    import torch

    return bool(set(torch.backends.quantized.supported_engines) & {"x86", "fbgemm"})


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


def fuse_gelu(model: Any) -> int:
    """Swap transformers' Python tanh-GELU (`gelu_new`: seven elementwise ops) for torch's fused one.

    The same formula, 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), in one kernel instead of
    seven passes over the largest activation (rows x tokens x intermediate): results differ by
    fp32 rounding only (bench/CPU.md: 1.04-1.28x on the CPU forward). Returns how many modules were swapped.
    """
    import torch

    try:
        from transformers.activations import NewGELUActivation
    except ImportError:  # pragma: no cover - a transformers without it
        return 0
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, torch.nn.GELU(approximate="tanh"))
                swapped += 1
    return swapped


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
        self.precision = resolve_precision(precision, self.device)
        # Refused here, before the slow load, when it cannot run on this device and precision.
        self.runtime = onnx_forward.resolve_runtime(runtime, self.device, self.precision)
        self._cuda = self.device.startswith("cuda")
        self.model: Any = None
        self.tokenizer: Any = None
        self._autocast: Any = None
        self._staging: _Staging | None = None
        self._onnx: onnx_forward.OnnxForward | None = None
        self._ahead: tuple[list[list[int]], list[Any]] | None = None  # see head_start
        # A local checkpoint exported by an earlier run loads without torch or transformers (start-up).
        cached = onnx_forward.load_cached(model) if self.runtime == "onnx" else None
        if cached is not None:
            _check_local_weights(Path(model).expanduser(), allow_pickle)  # the refusal of the full load
            self._onnx, meta = cached
            self.labels, self._pad_id = list(meta["labels"]), int(meta["pad_id"])
            self.max_length = min(max_length, int(meta["max_positions"]))
            self.revision = revision or meta["revision"]
            self._rust = self._onnx.tokenizer(self.max_length)
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
        self._rust = self._rust_tokenizer()
        if self.runtime == "onnx":  # the checkpoint's own modules are traced; later runs load the export
            meta = {"labels": self.labels, "pad_id": self._pad_id, "revision": self.revision,
                    "max_positions": int(getattr(config, "max_position_embeddings", max_length) or max_length),
                    "truncation_side": getattr(self.tokenizer, "truncation_side", "right")}
            self._onnx = onnx_forward.OnnxForward.export_and_load(
                self.model, model, self.tokenizer.backend_tokenizer.to_str(), meta
            )
            self.model = None  # the same path whether the export was cached or made now
            return
        fuse_gelu(self.model)
        if self.precision == "int8":
            self.model = quantize_int8(self.model)
        self._autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if self._autocast is not None and self.fast["half_weights"]:
            self.model.to(self._autocast)  # weights in bf16/fp16; _run upcasts the logits for the softmax
            self._autocast = None
        self._staging = _Staging(self.device) if self.fast["staging"] else None
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
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        starts = np.cumsum(lengths) - lengths
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
        """Probabilities for pre-tokenized rows, in the order given.

        Batches are padded with array operations only (no loop over rows). On CUDA the
        per-batch results stay on the device and come back in one copy per call, so the host
        queues batch k+1 while the GPU still runs batch k. Batches that `head_start` already
        ran for these very ids are taken from it, not run again.
        """
        probs = np.empty((len(ids), len(self.labels)), dtype=np.float32)
        if not ids:
            return probs
        ahead = self._take_ahead(ids)
        order, outputs = [], []
        for k, (batch, input_ids, mask_or_lengths) in enumerate(self._batches(ids)):
            order.append(batch)
            outputs.append(ahead[k] if k < len(ahead) else self._run_batch(input_ids, mask_or_lengths))
        probs[np.concatenate(order)] = self._gather(outputs)
        return probs

    def head_start(self, ids: list[list[int]], stop: Callable[[], bool]) -> int:
        """Run the batches `forward(ids)` would run, in its order, until `stop()` says so; returns how many ran.

        For the time before an orchestrator is ready to call `forward`: the next `forward` of
        the same ids (compared by content) takes these outputs instead of computing them again,
        so its result is exactly what it would have been. Only the latest head start is kept.
        """
        outputs: list[Any] = []
        for _batch, input_ids, mask_or_lengths in self._batches(ids):
            if stop():
                break
            outputs.append(self._run_batch(input_ids, mask_or_lengths))
        self._ahead = (ids, outputs) if outputs else None
        return len(outputs)

    def _take_ahead(self, ids: list[list[int]]) -> list[Any]:
        ahead, self._ahead = self._ahead, None
        return ahead[1] if ahead is not None and ahead[0] == ids else []

    def _batches(self, ids: list[list[int]]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each batch in run order: its row indices, padded ids, and the mask (or, when staging, the lengths)."""
        n = len(ids)
        if not (self.fast["prepare_in_encode"] or self.fast["pad_multiple"] > 1 or self._staging is not None):
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
            starts = np.cumsum(lengths) - lengths
            for batch in pack(lengths, self.batch_tokens):
                input_ids, mask = pad_batch(flat, starts[batch], lengths[batch], self._pad_id)
                yield batch, input_ids, mask
            return
        ready = getattr(ids, "batches", None) if getattr(ids, "key", None) == self._batch_key() else None
        for batch, input_ids, lengths in ready if ready is not None else self._prepare(ids):
            if self._staging is not None:
                yield batch, input_ids, lengths
            else:
                yield batch, input_ids, (np.arange(input_ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)

    def _run_batch(self, input_ids: np.ndarray, mask_or_lengths: np.ndarray) -> Any:
        if self._staging is not None:
            return self._run_staged(input_ids, mask_or_lengths)
        return self._run(input_ids, mask_or_lengths)

    def _gather(self, outputs: list[Any]) -> np.ndarray:
        """The batches' probabilities as one host array: numpy from ONNX Runtime, one device copy from torch."""
        if self._onnx is not None:
            return np.concatenate(outputs)  # (and torch need not be imported at all)
        import torch

        return torch.cat(outputs).cpu().numpy()

    def _run_staged(self, input_ids: np.ndarray, lengths: np.ndarray) -> Any:
        """One batch through the reused host buffers; the mask is made on the device from the lengths."""
        import torch

        with torch.inference_mode():
            ids, lengths_on_device = self._staging.put(input_ids, lengths)
            position = torch.arange(ids.shape[1], device=ids.device)
            mask = (position[None, :] < lengths_on_device[:, None]).to(torch.int64)
            return self._forward_probs(ids, mask)

    def _to_device(self, array: np.ndarray) -> Any:
        """Host array -> model device. On CUDA through pinned memory, so the copy is asynchronous."""
        import torch

        tensor = torch.from_numpy(array)
        if not self._cuda:
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _run(self, input_ids: np.ndarray, mask: np.ndarray) -> Any:
        """One batch -> fp32 probabilities: a tensor on the model's device (no host sync here), or numpy from ONNX Runtime."""
        if self._onnx is not None:
            return self._onnx(input_ids, mask)
        import torch

        with torch.inference_mode():
            input_ids, mask = self._to_device(input_ids), self._to_device(mask)
            return self._forward_probs(input_ids, mask)

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
        exact = {"half_weights": False, "staging": False, "prepare_in_encode": False, "pad_multiple": 1,
                 "attn_implementation": None, "compile": False}
        on = {k: v for k, v in self.fast.items() if v != exact[k]}
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
