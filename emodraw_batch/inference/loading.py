"""Loading a checkpoint: a local folder or hub id, safetensors only unless allowed; int8 and fused GELU.

torch and transformers are imported lazily here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from emodraw_batch.errors import ModelError


def position_limit(config: Any, default: int) -> int:
    """How many positions the model has embeddings for (`default` where its config does not say)."""
    return int(getattr(config, "max_position_embeddings", default) or default)


def input_limits(tokenizer: Any, config: Any, max_length: int) -> tuple[int, int]:
    """(max tokens per text, pad id): never more positions than the model has embeddings for."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return min(max_length, position_limit(config, max_length)), pad_id


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


OFFLINE = "offline"  # --model offline: the distilled model shipped inside the package


def packaged_model() -> Path:
    """The folder of the model shipped inside the package (emodraw_batch/models/albert-emotion)."""
    return Path(__file__).resolve().parents[1] / "models" / "albert-emotion"


def resolve_model(name: str) -> tuple[str, str | None]:
    """(where to load `name` from, its revision when the name fixes it).

    `offline` is the packaged model; its revision is a hash of its weights, so the manifest says
    exactly which weights labelled the rows. (A folder named "offline" is `./offline`.)
    """
    if name != OFFLINE:
        return name, None
    import hashlib

    weights = packaged_model() / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"--model offline: the model shipped with emodraw-batch is missing from this installation "
                         f"({str(weights.parent)!r}). Reinstall emodraw-batch, or pass a checkpoint folder with --model DIR.")
    return str(weights.parent), "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


def check_local_weights(folder: Path, allow_pickle: bool) -> None:
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
    import torch
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
        check_local_weights(folder, allow_pickle)
    source = str(folder) if is_local else name
    if not is_local and not _in_cache(name, revision) and not _hub_reachable():
        raise ModelError(
            f"Model {name!r} is not a local folder, is not in the Hugging Face cache, and the hub cannot be reached "
            "(offline machine, firewall, or HF_HUB_OFFLINE=1). Download the checkpoint on a machine with access "
            "(`huggingface-cli download ID --local-dir DIR`) and pass the folder with --model DIR, or use the model "
            "shipped with emodraw-batch: --model offline (the default: a distilled ALBERT, 24 MB, no download)."
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
                # fp32 whatever the weights were stored in (the shipped model is stored in fp16 to
                # halve its size): --precision, not the file, decides how the forward pass runs.
                dtype=torch.float32,
            )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if is_local:
            raise ModelError(f"Could not load the checkpoint folder {source!r}: {first}") from None
        raise ModelError(
            f"Could not load model {name!r} from the Hugging Face hub ({first}). If the hub is unreachable "
            "(offline machine, firewall) download the checkpoint elsewhere with "
            "`huggingface-cli download` and pass its local folder with --model PATH, or use the model shipped "
            "with emodraw-batch: --model offline. "
            "If only pickle weights exist, --allow-pickle loads them."
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"Checkpoint {name!r} has no fast (Rust) tokenizer (tokenizer.json); it is required.")
    return tokenizer, model
