"""The classifier: load a checkpoint once, then `classifier(texts) -> Prediction`.

torch and transformers are imported lazily here, so the CLI's `--help` and the
input validation never pay for them.
"""

from __future__ import annotations

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

CPU_BATCH_TOKENS = 8192
MAX_GPU_BATCH_TOKENS = 262_144


@dataclass(frozen=True)
class Prediction:
    """Per row: probabilities (n, labels) float32, token count after truncation, truncated flag."""

    probs: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray


def column_name(label: str) -> str:
    """`prob_<label>` with the label made safe as a column name ("Very Sad" -> prob_very_sad)."""
    return "prob_" + (re.sub(r"[^0-9a-zA-Z]+", "_", label).strip("_").lower() or "label")


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
    """`auto` is exact fp32 on the CPU and bf16 autocast on CUDA."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    return precision


def default_batch_tokens(device: str) -> int:
    """A token budget that fits the device: fixed on CPU, sized to free memory on CUDA."""
    if not device.startswith("cuda"):
        return CPU_BATCH_TOKENS
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    # ~64 KiB of activations per token for ALBERT-base in bf16 leaves ample headroom.
    return int(min(MAX_GPU_BATCH_TOKENS, max(CPU_BATCH_TOKENS, free // 65_536)))


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
        config = self.model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.columns = [column_name(label) for label in self.labels]
        if len(set(self.columns)) != len(self.columns):
            raise ModelError(f"Checkpoint {model!r} has labels that clash as column names: {self.labels}.")
        limit = int(getattr(config, "max_position_embeddings", max_length) or max_length)
        # Never feed more positions than the model has embeddings for.
        self.max_length = min(max_length, limit)
        self.batch_tokens = batch_tokens or default_batch_tokens(self.device)
        self.revision = revision or getattr(config, "_commit_hash", None)
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        torch.set_grad_enabled(False)

    def encode(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids (truncated to max_length) and a truncated flag, in one bulk Rust call."""
        if not texts:
            return [], np.zeros(0, dtype=bool)
        enc = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, return_attention_mask=False, return_token_type_ids=False
        )
        truncated = np.fromiter((len(e.overflowing) > 0 for e in enc.encodings), dtype=bool, count=len(texts))
        return enc["input_ids"], truncated

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        """Probabilities for pre-tokenized rows, in the order given."""
        import torch

        n = len(ids)
        probs = np.empty((n, len(self.labels)), dtype=np.float32)
        if n == 0:
            return probs
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
        for batch in pack(lengths, self.batch_tokens):
            longest = int(lengths[batch[0]])
            input_ids = np.full((len(batch), longest), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), longest), dtype=np.int64)
            for row, i in enumerate(batch):
                input_ids[row, : lengths[i]] = ids[i]
                mask[row, : lengths[i]] = 1
            probs[batch] = self._run(torch.from_numpy(input_ids), torch.from_numpy(mask))
        return probs

    def _run(self, input_ids, mask) -> np.ndarray:
        import torch

        with torch.inference_mode():
            input_ids = input_ids.to(self.device, non_blocking=True)
            mask = mask.to(self.device, non_blocking=True)
            device_type = "cuda" if self.device.startswith("cuda") else "cpu"
            if self._autocast is None:
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            else:
                with torch.autocast(device_type, dtype=self._autocast):
                    logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            # Softmax in fp32 whatever the compute precision; results leave the device each batch.
            return logits.float().softmax(-1).cpu().numpy()

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
