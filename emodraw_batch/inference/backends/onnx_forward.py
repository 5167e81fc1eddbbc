"""The ONNX Runtime forward pass on the CPU: what `--runtime auto` runs for fp32 there.

The same checkpoint, tokenizer, sorted token-budget batching and padding as the torch path:
only the forward pass of a padded batch changes. The model is exported once with
torch.onnx.export (the TorchScript exporter: ~1 s for the tiny model; the dynamo exporter
took 16 s) and cached on disk under a key of the checkpoint's files and the library versions,
so later runs load the .onnx file directly. ONNX Runtime's CPU kernels fuse attention, GELU
and LayerNorm, where torch runs them op by op (bench/CPU.md has the measurements that
motivated it). Probabilities match torch fp32 to ~1e-6; a label can differ only where two
classes tie to that precision (tests/test_forward_runtimes.py).

onnxruntime and onnx are dependencies of the package; an environment without them (e.g. a GPU
image built by hand) falls back to torch under `auto`.

Only fp32 runs here: ONNX Runtime's dynamic int8 kept 98.25% of fp32's labels on the issue's
measurement, under the 99% that `--precision fast` promises, so int8 stays on torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from emodraw_batch.atomic import replacing, write_json, write_text
from emodraw_batch.errors import ConfigError
from emodraw_batch.inference.backends import Pending, lengths_mask

RUNTIMES = ("auto", "torch", "onnx")


def available() -> bool:
    """Whether onnxruntime (and onnx, which the export needs) are installed."""
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def resolve_runtime(runtime: str, device: str, precision: str) -> str:
    """`auto` is onnx where it runs (CPU, fp32, onnxruntime installed), else torch; others are checked."""
    check(runtime, device, precision)
    if runtime == "auto":
        return "onnx" if device == "cpu" and precision == "fp32" and available() else "torch"
    return runtime


def check(runtime: str, device: str, precision: str) -> None:
    """Refuse a runtime setting that cannot work, saying why and what to do instead."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}.")
    if runtime != "onnx":
        return
    if device != "cpu":
        raise ConfigError(
            f"--runtime onnx runs on the CPU, but the device is {device}. Use --runtime torch on a GPU, or --device cpu."
        )
    if precision != "fp32":
        raise ConfigError(
            f"--runtime onnx runs fp32 only, but the precision is {precision}. Use --precision fp32 with "
            "--runtime onnx, or --runtime torch for bf16/int8."
        )
    if not available():
        raise ConfigError(
            "--runtime onnx needs onnxruntime and onnx, which are not installed. Install them with "
            "pip install onnxruntime onnx, or use --runtime torch."
        )


def cache_root() -> Path:
    """$EMODRAW_CACHE, else $XDG_CACHE_HOME/emodraw-batch, else ~/.cache/emodraw-batch."""
    if os.environ.get("EMODRAW_CACHE"):
        return Path(os.environ["EMODRAW_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "emodraw-batch"


def cache_key(source: str) -> str | None:
    """What the exported graph depends on: the local checkpoint's files (name, size, mtime) and the libraries.

    None for a hub id (not a local folder): its files live in the hub cache under a revision,
    so it is loaded with transformers and exported each run. Versions come from the package
    metadata, so computing the key imports neither torch nor transformers.
    """
    from importlib.metadata import PackageNotFoundError, version

    folder = Path(source).expanduser()
    if not folder.is_dir():
        return None
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()]
    versions = []
    for package in ("torch", "transformers", "tokenizers", "onnxruntime"):
        try:
            versions.append(version(package))
        except PackageNotFoundError:
            versions.append(None)
    parts = {"source": str(folder.resolve()), "files": files, "versions": versions, "format": 1}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def export(model: Any, path: Path) -> Path:
    """Export a sequence classifier to `path` (input_ids, attention_mask -> logits), atomically."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    dummy = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), replacing(path) as tmp:
        warnings.simplefilter("ignore")  # tracer warnings about Python booleans that are constant here
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                Logits(model.float().eval()),
                dummy,
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    return path


def load_cached(source: str) -> tuple[OnnxForward, dict[str, Any]] | None:
    """(forward pass, metadata) from an earlier export of this exact local checkpoint; None if there is none.

    Imports only onnxruntime and tokenizers: no torch, no transformers. The metadata (labels,
    pad id, position limit, revision, truncation side) and the tokenizer are the ones the full
    load produced, saved beside the graph, so both paths tokenize and label alike.
    """
    key = cache_key(source)
    if key is None:
        return None
    folder = cache_root() / "onnx" / key
    meta_file = folder / "meta.json"  # written last: its presence means the entry is complete
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    return OnnxForward(folder), meta


class OnnxForward:
    """`forward(input_ids, attention_mask) -> fp32 probabilities` with ONNX Runtime on the CPU.

    Data parallel: `threads` batches run at once, each on one thread (`run` queues a batch on a
    pool and returns its Future), rather than one batch at a time split over `threads` threads.
    Splitting a batch makes every operator wait for its slowest thread, so a thread that loses its
    core for a moment (the run's reading, tokenizing and writing threads, Prefect's server and
    client share the cores) stalls the other: with one busy process beside it on 2 cores, 400
    rows of ALBERT-base took 27.5 s split and 21.3 s data parallel; 14.5 and 14.3 s on idle cores
    (same batches, same probabilities bit for bit; docs/performance.md).
    """

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.folder = folder
        self.path = folder / "model.onnx"
        # As many batches at once as torch would use threads (OMP_NUM_THREADS, else the cores).
        self.threads = threads or _default_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # each run on the thread that calls it: no pool to wait on
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="emodraw-onnx")
        # Batches queued or running at most: every thread has its next batch ready, and no more
        # padded batches than that wait in memory (`run` blocks the caller until one finishes).
        self._slots = threading.BoundedSemaphore(2 * self.threads)

    @classmethod
    def export_and_load(cls, model: Any, source: str, tokenizer_json: str, meta: dict[str, Any]) -> OnnxForward:
        """Export `model` (cached for a local folder, else in a temporary folder) and load it.

        A cache that cannot be written (a read-only home, a full disk) costs the export on every
        run, never the run: the export then goes to a temporary folder.
        """
        key = cache_key(source)
        if key is not None:
            folder = cache_root() / "onnx" / key
            try:
                _write(model, folder, tokenizer_json, meta)
                return cls(folder)
            except OSError:
                pass  # not writable: export to a temporary folder below, as for a hub checkpoint
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="emodraw-onnx-"))
        _write(model, folder, tokenizer_json, meta)
        return cls(folder)

    def close(self) -> None:
        """End the pool's threads once their batches are done (idle, they would keep a process from exiting)."""
        self._pool.shutdown(wait=False)

    def tokenizer_json(self) -> str:
        """The checkpoint's tokenizer as saved at export (model.truncating_tokenizer sets it up)."""
        return (self.folder / "tokenizer.json").read_text()

    def run(self, input_ids: np.ndarray, lengths: np.ndarray) -> Future[np.ndarray]:
        """Queue one batch on the pool; its Future gives the fp32 probabilities."""
        mask = lengths_mask(input_ids, lengths)
        self._slots.acquire()
        future = self._pool.submit(self, input_ids, mask)
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def pending(self, rows: int, order: np.ndarray, outputs: list[Future[np.ndarray]]) -> Pending:
        """Waits for the window's batches (a batch's error is raised here); torch need not be imported at all."""
        return Pending(rows, order, np.concatenate([future.result() for future in outputs]))

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
        logits = logits.astype(np.float32, copy=False)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def _write(model: Any, folder: Path, tokenizer_json: str, meta: dict[str, Any]) -> None:
    """The graph (unless already there), the tokenizer, then the metadata: its presence marks a complete entry."""
    if not (folder / "model.onnx").is_file():
        export(model, folder / "model.onnx")
    write_text(folder / "tokenizer.json", tokenizer_json)
    write_json(folder / "meta.json", meta)


def _default_threads() -> int:
    """torch's default without importing torch: OMP_NUM_THREADS if set, else the usable cores."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
