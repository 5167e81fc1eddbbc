"""The forward-pass runtimes: ONNX Runtime and torch with the fused GELU; same batches, same labels.

onnxruntime and onnx are package dependencies; the equality tests are skipped only in an
environment that lacks them. The setting checks run everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import SAME_MATHS_ATOL, make_texts
from emodraw_batch.inference.backends import lengths_mask, onnx_forward
from emodraw_batch.errors import ConfigError
from emodraw_batch.inference.classifier import EmotionClassifier

SHIPPED = str(Path(__file__).resolve().parents[1] / "data" / "albert-emotion")
# ONNX Runtime vs torch is not just another order of the same kernels (SAME_MATHS_ATOL): the exported graph
# is rewritten (constant folding, ORT's fused attention, LayerNorm and GELU kernels with their own
# approximations). Measured max |p_onnx - p_torch|: ~1e-6 on the shipped model, up to 1.7e-5 on the
# wide-initialised test model, which exceeds SAME_MATHS_ATOL; 6x margin.
PROB_ATOL = 1e-4

needs_onnx = pytest.mark.skipif(not onnx_forward.available(), reason="onnxruntime/onnx not installed ")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EMODRAW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def assert_same_labels(exact: np.ndarray, other: np.ndarray) -> None:
    np.testing.assert_allclose(other, exact, atol=PROB_ATOL)
    top2 = np.sort(exact, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * PROB_ATOL  # rows whose top label is not a tie at fp32 precision
    assert clear.mean() > 0.9
    assert (other.argmax(1) == exact.argmax(1))[clear].all()


@needs_onnx
@pytest.mark.parametrize("which", ["tiny_model", "shipped"])
def test_onnx_labels_equal_torch_fp32(which, request, cache):
    model = SHIPPED if which == "shipped" else request.getfixturevalue("tiny_model")
    # Lengths from 1 to 60 words: many batch shapes, padding, and truncation at 48 tokens.
    texts = make_texts(300, seed=5, max_words=60)
    exact = EmotionClassifier(model, device="cpu", precision="fp32", max_length=48)(texts)
    onnx = EmotionClassifier(model, device="cpu", precision="fp32", max_length=48, runtime="onnx")
    got = onnx(texts)
    assert onnx.describe()["runtime"] == "onnx" and onnx.describe()["precision"] == "fp32"
    assert (got.n_tokens == exact.n_tokens).all() and (got.truncated == exact.truncated).all()
    assert exact.truncated.any()  # the long texts were cut, as on the torch path
    assert_same_labels(exact.probs, got.probs)


@needs_onnx
def test_export_is_cached_and_reused(cache, monkeypatch):
    first = EmotionClassifier(SHIPPED, device="cpu", precision="fp32", runtime="onnx")
    exported = list(cache.rglob("*.onnx"))
    assert exported == [first.backend.path]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cached graph is up to date")

    monkeypatch.setattr(onnx_forward, "export", no_export)
    second = EmotionClassifier(SHIPPED, device="cpu", precision="fp32", runtime="onnx")
    assert second.backend.path == first.backend.path
    texts = make_texts(20, seed=1)
    np.testing.assert_array_equal(second(texts).probs, first(texts).probs)


@needs_onnx
def test_onnx_batches_run_in_parallel_give_each_batch_its_own_result(cache):
    """Batches run on a pool of threads, finishing out of order: every row still gets exactly what
    its batch gives run alone, and a batch that fails raises when the window is collected."""
    clf = EmotionClassifier(SHIPPED, device="cpu", precision="fp32", runtime="onnx", batch_tokens=64)
    backend = onnx_forward.OnnxForward(clf.backend.folder, threads=3)
    ids, _ = clf.encode(make_texts(120, seed=8, max_words=30))
    batches = list(clf.batcher.batches(ids))
    assert len(batches) > 10  # more batches than threads and queue slots
    pending = backend.pending(len(ids), np.concatenate([b for b, _, _ in batches]),
                              [backend.run(input_ids, lengths) for _, input_ids, lengths in batches])
    alone = np.concatenate([backend(input_ids, lengths_mask(input_ids, lengths)) for _, input_ids, lengths in batches])
    np.testing.assert_array_equal(pending.probs, alone)
    np.testing.assert_array_equal(clf.collect(pending), clf.forward(ids))
    bad = backend.run(np.zeros((2, 3), dtype=np.int32), np.array([3, 3]))  # int32 ids: the graph wants int64
    with pytest.raises(Exception, match="(?i)int64|type"):
        backend.pending(2, np.arange(2), [bad])


def test_onnx_runtime_settings_are_checked_before_loading(monkeypatch):
    onnx_forward.check("torch", "cuda:0", "bf16")  # the default runtime accepts everything
    with pytest.raises(ConfigError, match="runs on the CPU"):
        onnx_forward.check("onnx", "cuda", "fp32")
    with pytest.raises(ConfigError, match="fp32 only"):
        onnx_forward.check("onnx", "cpu", "int8")
    with pytest.raises(ConfigError, match="must be one of"):
        onnx_forward.check("tensorrt", "cpu", "fp32")
    monkeypatch.setattr(onnx_forward, "available", lambda: False)
    with pytest.raises(ConfigError, match="pip install onnxruntime onnx"):
        onnx_forward.check("onnx", "cpu", "fp32")
    with pytest.raises(ConfigError, match="pip install"):
        EmotionClassifier(SHIPPED, device="cpu", precision="fp32", runtime="onnx")


def test_auto_runtime_is_onnx_only_for_fp32_on_the_cpu_when_installed(monkeypatch):
    monkeypatch.setattr(onnx_forward, "available", lambda: True)
    assert onnx_forward.resolve_runtime("auto", "cpu", "fp32") == "onnx"
    assert onnx_forward.resolve_runtime("auto", "cpu", "int8") == "torch"
    assert onnx_forward.resolve_runtime("auto", "cpu", "bf16") == "torch"
    assert onnx_forward.resolve_runtime("auto", "cuda:0", "fp32") == "torch"
    assert onnx_forward.resolve_runtime("torch", "cpu", "fp32") == "torch"
    monkeypatch.setattr(onnx_forward, "available", lambda: False)
    assert onnx_forward.resolve_runtime("auto", "cpu", "fp32") == "torch"  # not installed: never an error


def test_fused_gelu_keeps_the_torch_probabilities(tiny_model):
    """loading.fuse_gelu: torch's one-kernel tanh-GELU for transformers' seven-op one, same formula."""
    import torch
    from transformers.activations import NewGELUActivation

    from emodraw_batch.inference.loading import fuse_gelu, load_checkpoint
    from emodraw_batch.inference.batcher import pad_batch

    clf = EmotionClassifier(tiny_model, device="cpu", precision="fp32", runtime="torch")
    assert not any(isinstance(m, NewGELUActivation) for m in clf.model.modules())  # swapped at load
    _, plain = load_checkpoint(tiny_model)
    plain.eval()
    assert any(isinstance(m, NewGELUActivation) for m in plain.modules())
    ids, _ = clf.encode(make_texts(64, seed=2))
    lengths = np.array([len(i) for i in ids])
    flat = np.concatenate([np.asarray(i) for i in ids])
    input_ids, mask = pad_batch(flat, np.cumsum(lengths) - lengths, lengths, clf.batcher.pad_id)
    with torch.inference_mode():
        expected = plain(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask)).logits.softmax(-1)
    # The same formula in another operation order (one kernel instead of seven): measured max |dp| 1.8e-6.
    np.testing.assert_allclose(clf.backend.run(input_ids, lengths).numpy(), expected.numpy(), atol=SAME_MATHS_ATOL)
    assert fuse_gelu(plain) > 0 and fuse_gelu(plain) == 0  # idempotent


@needs_onnx
def test_a_cached_export_loads_without_torch_and_labels_alike(cache):
    """The start-up path: a second load of an exported local checkpoint imports neither torch nor transformers."""
    import subprocess
    import sys

    texts = make_texts(80, seed=9)
    full = EmotionClassifier(SHIPPED, device="cpu", precision="fp32", runtime="onnx")  # exports
    expected = full(texts)
    code = (
        "import sys, json; from emodraw_batch.inference.classifier import EmotionClassifier; "
        f"c = EmotionClassifier({SHIPPED!r}, device='auto', precision='auto', runtime='auto'); "
        f"p = c({texts!r}); "
        "print(json.dumps([sorted(m for m in ('torch', 'transformers') if m in sys.modules), c.describe(), "
        "p.probs.tolist(), p.n_tokens.tolist()]))"
    )
    import json
    import os

    env = {**os.environ, "EMODRAW_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    imported, described, probs, n_tokens = json.loads(out.stdout.strip().splitlines()[-1])
    if not onnx_forward.available() or Path("/dev/nvidia0").exists():
        pytest.skip("a GPU machine resolves device auto with torch")
    assert imported == []
    assert described == {**full.describe(), "runtime": "onnx"}
    np.testing.assert_array_equal(np.array(n_tokens), expected.n_tokens)
    np.testing.assert_allclose(np.array(probs, dtype=np.float32), expected.probs, atol=SAME_MATHS_ATOL)


@needs_onnx
def test_a_cache_that_cannot_be_written_costs_the_export_not_the_run(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EMODRAW_CACHE", str(blocker / "cache"))  # mkdir fails: NotADirectoryError
    texts = make_texts(30, seed=3)
    clf = EmotionClassifier(SHIPPED, device="cpu", precision="fp32", runtime="onnx")
    assert clf.runtime == "onnx" and not str(clf.backend.path).startswith(str(blocker))
    exact = EmotionClassifier(SHIPPED, device="cpu", precision="fp32", runtime="torch")(texts)
    assert_same_labels(exact.probs, clf(texts).probs)
