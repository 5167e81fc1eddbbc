"""Every fast path gives the results of the exact one.

Speed itself is measured by `bench/bench.py`, never here. These tests pin down that
overlapping (prefetch/write-behind), token budgets, the direct Rust tokenizer call, the
vectorized padding and the int8/bf16 precisions change *when* and *how fast* rows are
labelled, not *what* is written: exact paths to SAME_MATHS_ATOL, approximate ones within stated
tolerances. GPU budget sizing is tested on fake memory numbers.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import SAME_MATHS_ATOL, make_texts, write_corpus
from emodraw_batch.job import runner
from emodraw_batch.config import RunConfig, load_config
from emodraw_batch.errors import ConfigError
from emodraw_batch.inference.backends import onnx_forward
from emodraw_batch.inference.device import (
    CPU_BATCH_TOKENS,
    CPU_BF16_BATCH_TOKENS,
    CPU_ONNX_BATCH_TOKENS,
    MAX_GPU_BATCH_TOKENS,
    MIN_GPU_BATCH_TOKENS,
    activation_bytes_per_token,
    cpu_has_bf16,
    default_batch_tokens,
    gpu_batch_tokens,
    resolve_precision,
)
from emodraw_batch.inference.batcher import pad_batch
from emodraw_batch.inference.classifier import EmotionClassifier
from emodraw_batch.job.prefetch import SerialWorker, prefetch

# Approximate precisions on a well-conditioned random model (see `smooth_model`):
# measured max |p - p_fp32| was 0.0045 (int8) and 0.0009 (bf16) on 400 texts.
INT8_ATOL, BF16_ATOL, MIN_AGREEMENT = 0.02, 0.01, 0.98


@pytest.fixture(scope="module")
def smooth_model(tmp_path_factory) -> str:
    """A tiny random ALBERT with moderate weights (initializer 0.1).

    The shared `tiny_model` has deliberately wild weights so that any batching bug shows;
    that also makes it chaotic under quantization noise, which says nothing about int8 on a
    real model. This one is far from uniform (median top-2 margin ~0.05) yet stable.
    """
    from conftest import WORDS

    from emodraw_batch.train.from_scratch import build_albert, train_tokenizer

    folder = tmp_path_factory.mktemp("smooth-albert")
    tokenizer = train_tokenizer(make_texts(400, seed=1) + WORDS, vocab_size=300, kind="bpe")  # deterministic
    build_albert(folder, tokenizer, size="tiny", max_position_embeddings=64, seed=0, initializer_range=0.1)
    return str(folder)


def corpus_with_gaps(path, n: int = 300):
    texts: list[str | None] = make_texts(n, seed=5, max_words=80)  # some longer than 64 tokens: chunked
    for i in range(0, n, 37):
        texts[i] = None
    for i in range(5, n, 41):
        texts[i] = "   "
    for i in range(9, n, 53):
        texts[i] = ""
    return write_corpus(path, texts, row_group_size=50)


def read_labels(out_dir) -> pa.Table:
    files = sorted((out_dir / "labels").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def run_job(src, out, model: str, monkeypatch=None, overlap: int | None = None, **settings) -> tuple[pa.Table, object]:
    if overlap is not None:
        monkeypatch.setattr(runner, "OVERLAP_WINDOWS", overlap)
    config = load_config(model=model, device="cpu", window_rows=40, shard_rows=100, **settings)
    summary = runner.run([str(src)], out, config)
    return read_labels(out), summary


def prob_matrix(table: pa.Table) -> np.ndarray:
    names = [c for c in table.column_names if c.startswith("prob_")]
    return np.column_stack([table[c].to_numpy(zero_copy_only=False) for c in names])


# -- exact fast paths ------------------------------------------------------------------------


def test_overlap_on_and_off_write_identical_files(tiny_model, tmp_path, monkeypatch):
    src = corpus_with_gaps(tmp_path / "in.parquet")
    inline, s0 = run_job(src, tmp_path / "inline", tiny_model, monkeypatch, overlap=0)
    ahead, s2 = run_job(src, tmp_path / "ahead", tiny_model, monkeypatch, overlap=2)
    assert inline.num_rows == ahead.num_rows == 300
    assert ahead["id"].to_pylist() == list(range(300))  # input order kept
    # The same computation in another thread: bit-identical, including the schema metadata.
    assert ahead.equals(inline, check_metadata=True)
    assert (s0.emotions, s0.status, s0.truncated) == (s2.emotions, s2.status, s2.truncated)
    # the corpus really exercises gaps and long texts (chunked, the default: several windows per text)
    assert s0.status["ok"] < 300 and pc.max(inline["n_chunks"]).as_py() > 1


@pytest.mark.parametrize("budget", [64, 700, CPU_BATCH_TOKENS, 100_000])
def test_token_budget_changes_nothing(tiny_model, budget):
    texts = make_texts(200, seed=9, max_words=80)
    exact = EmotionClassifier(tiny_model, device="cpu", batch_tokens=8192)(texts)
    other = EmotionClassifier(tiny_model, device="cpu", batch_tokens=budget)(texts)
    np.testing.assert_allclose(other.probs, exact.probs, atol=SAME_MATHS_ATOL)
    assert np.array_equal(other.n_tokens, exact.n_tokens) and np.array_equal(other.truncated, exact.truncated)


@pytest.mark.parametrize("chunk", [7, 4096])
def test_direct_rust_tokenizer_equals_the_transformers_call(tiny_model, monkeypatch, chunk):
    from emodraw_batch.inference import batcher

    monkeypatch.setattr(batcher, "ENCODE_CHUNK", chunk)  # 7: many chunks, the last one partial
    clf = EmotionClassifier(tiny_model, device="cpu")
    texts = make_texts(150, seed=2, max_words=90) + ["Ünïcode  ÉMOJI 😀 text", "x"]
    ids, truncated = clf.encode(texts)
    reference = clf.tokenizer(texts, truncation=True, max_length=clf.max_length)
    assert ids == reference["input_ids"]
    expected = [len(clf.tokenizer(t)["input_ids"]) > clf.max_length for t in texts]
    assert truncated.tolist() == expected and any(expected)
    # The wrapper's own tokenizer is untouched: untruncated calls still see the full text.
    assert max(len(x) for x in clf.tokenizer(texts)["input_ids"]) > clf.max_length


def test_vectorized_padding_equals_a_row_loop():
    rng = np.random.default_rng(0)
    rows = [rng.integers(5, 300, size=n).tolist() for n in rng.integers(1, 30, size=40)]
    lengths = np.array([len(r) for r in rows])
    flat = np.concatenate([np.array(r) for r in rows])
    starts = np.cumsum(lengths) - lengths
    pick = np.array([3, 0, 17, 39, 8])
    ids, mask = pad_batch(flat, starts[pick], lengths[pick], pad_id=1)
    width = lengths[pick].max()
    for row, i in enumerate(pick):
        expected = rows[i] + [1] * (width - len(rows[i]))
        assert ids[row].tolist() == expected
        assert mask[row].tolist() == [1] * len(rows[i]) + [0] * (width - len(rows[i]))


# -- approximate precisions --------------------------------------------------------------------


def test_int8_quantizes_every_linear_and_stays_close(smooth_model):
    import torch

    texts = make_texts(300, seed=4, max_words=60)
    exact = EmotionClassifier(smooth_model, device="cpu", precision="fp32")(texts)
    clf = EmotionClassifier(smooth_model, device="cpu", precision="int8")
    assert clf.describe()["precision"] == "int8"
    kinds = {type(m) for m in clf.model.modules()}
    assert torch.ao.nn.quantized.dynamic.Linear in kinds and torch.nn.Linear not in kinds
    fast = clf(texts)
    assert not np.array_equal(fast.probs, exact.probs)  # really a different computation
    np.testing.assert_allclose(fast.probs, exact.probs, atol=INT8_ATOL)
    np.testing.assert_allclose(fast.probs.sum(axis=1), 1.0, atol=SAME_MATHS_ATOL)  # softmax in fp32
    assert (fast.probs.argmax(1) == exact.probs.argmax(1)).mean() >= MIN_AGREEMENT
    assert np.array_equal(fast.n_tokens, exact.n_tokens)


def test_bf16_autocast_stays_close(smooth_model):
    texts = make_texts(200, seed=6, max_words=60)
    exact = EmotionClassifier(smooth_model, device="cpu", precision="fp32")(texts)
    fast = EmotionClassifier(smooth_model, device="cpu", precision="bf16")(texts)
    assert not np.array_equal(fast.probs, exact.probs)
    np.testing.assert_allclose(fast.probs, exact.probs, atol=BF16_ATOL)
    assert (fast.probs.argmax(1) == exact.probs.argmax(1)).mean() >= MIN_AGREEMENT


def test_int8_run_keeps_rows_order_and_status(smooth_model, tmp_path):
    src = corpus_with_gaps(tmp_path / "in.parquet", n=200)
    exact, _ = run_job(src, tmp_path / "fp32", smooth_model)
    fast, summary = run_job(src, tmp_path / "int8", smooth_model, precision="int8")
    for column in ("id", "text", "status", "n_tokens", "truncated"):
        assert fast[column].equals(exact[column]), column
    ok = np.array(exact["status"].to_pylist()) == "ok"
    np.testing.assert_allclose(prob_matrix(fast)[ok], prob_matrix(exact)[ok], atol=INT8_ATOL)
    agree = np.mean(np.array(fast["emotion"].to_pylist())[ok] == np.array(exact["emotion"].to_pylist())[ok])
    assert agree >= MIN_AGREEMENT
    assert b'"precision": "int8"' in pq.read_schema(tmp_path / "int8" / "labels" / "part-00000-00000.parquet").metadata[b"emodraw"]


def test_int8_is_cpu_only_and_a_valid_setting():
    assert RunConfig(precision="int8").precision == "int8"
    assert resolve_precision("int8", "cpu") == "int8"
    with pytest.raises(ConfigError, match="only on the CPU"):
        resolve_precision("int8", "cuda:0")


def test_bf16_support_is_read_from_cpu_flags():
    assert cpu_has_bf16("flags : fpu sse avx2 avx512f avx512_bf16") is True
    assert cpu_has_bf16("flags : fpu sse amx_tile amx_bf16") is True
    assert cpu_has_bf16("flags : fpu sse avx2 avx512f") is False


# -- GPU budget sizing, on fake numbers --------------------------------------------------------


def test_gpu_budget_follows_free_memory_within_bounds():
    per_token = 50_000
    budgets = [gpu_batch_tokens(gib << 30, per_token) for gib in (0, 1, 2, 4, 8, 80)]
    assert budgets == sorted(budgets)  # more free memory never means a smaller budget
    assert budgets[0] == MIN_GPU_BATCH_TOKENS and budgets[-1] == MAX_GPU_BATCH_TOKENS
    # In between, the budget is the share of free memory divided by the cost of a token.
    assert budgets[2] == int((2 << 30) * 0.5) // per_token
    assert gpu_batch_tokens(4 << 30, per_token, fraction=0.25) == budgets[2]


def test_activation_estimate_scales_with_model_and_precision():
    from types import SimpleNamespace

    base = SimpleNamespace(hidden_size=768, intermediate_size=3072, num_attention_heads=12)
    tiny = SimpleNamespace(hidden_size=32, intermediate_size=64, num_attention_heads=2)
    fp32 = activation_bytes_per_token(base, 128, "fp32")
    assert activation_bytes_per_token(base, 128, "bf16") * 2 == fp32
    assert activation_bytes_per_token(tiny, 128, "fp32") < fp32 < activation_bytes_per_token(base, 512, "fp32")
    # ALBERT-base on an 80 GB GPU hits the cap; on a nearly full one it still gets the floor.
    assert gpu_batch_tokens(80 << 30, activation_bytes_per_token(base, 128, "bf16")) == MAX_GPU_BATCH_TOKENS


def test_cuda_budget_reads_free_memory_from_torch(monkeypatch):
    import torch
    from types import SimpleNamespace

    config = SimpleNamespace(hidden_size=768, intermediate_size=3072, num_attention_heads=12)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 << 30, 80 << 30))
    expected = gpu_batch_tokens(3 << 30, activation_bytes_per_token(config, 128, "bf16"))
    assert MIN_GPU_BATCH_TOKENS < default_batch_tokens("cuda:0", config, 128, "bf16") == expected < MAX_GPU_BATCH_TOKENS
    assert default_batch_tokens("cpu", config) == CPU_BATCH_TOKENS


def test_cpu_budget_is_per_precision_and_reaches_the_classifier(tiny_model):
    """bf16 on the CPU packs 2k-token batches (its kernels gain from more rows), fp32 and int8 keep 1k; training's call keeps 1k."""
    assert CPU_BF16_BATCH_TOKENS > CPU_BATCH_TOKENS
    assert default_batch_tokens("cpu", None, 128, "bf16") == CPU_BF16_BATCH_TOKENS
    assert default_batch_tokens("cpu", None, 128, "fp32") == default_batch_tokens("cpu", None, 128, "int8") == CPU_BATCH_TOKENS
    assert default_batch_tokens("cpu") == CPU_BATCH_TOKENS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without native units warns: the budget is the point here
        bf16 = EmotionClassifier(tiny_model, device="cpu", precision="bf16")
        asked = EmotionClassifier(tiny_model, device="cpu", precision="bf16", batch_tokens=512)
    assert bf16.batch_tokens == bf16.describe()["batch_tokens"] == CPU_BF16_BATCH_TOKENS
    assert asked.batch_tokens == 512  # a budget asked for is kept
    assert EmotionClassifier(tiny_model, device="cpu", precision="fp32", runtime="torch").batch_tokens == CPU_BATCH_TOKENS
    # ONNX Runtime runs each batch on one core: smaller batches (bench/CPU.md)
    assert default_batch_tokens("cpu", None, 128, "fp32", "onnx") == CPU_ONNX_BATCH_TOKENS < CPU_BATCH_TOKENS
    if onnx_forward.available():
        onnx = EmotionClassifier(tiny_model, device="cpu", precision="fp32", runtime="onnx")
        assert onnx.batch_tokens == onnx.describe()["batch_tokens"] == CPU_ONNX_BATCH_TOKENS


# -- the overlap tools themselves ------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_keeps_order_and_its_memory_bound(depth):
    started: list[int] = []

    def items():
        for i in range(100):
            started.append(i)  # counted when production of item i begins
            yield i * i

    for k, item in enumerate(prefetch(items(), depth)):
        assert item == k * k
        # Beyond the item in hand, at most `depth` are produced or being produced: the window bound.
        assert len(started) <= k + 1 + depth


@pytest.mark.parametrize("depth", [0, 2])
def test_prefetch_raises_the_producers_error_after_the_good_items(depth):
    def items():
        yield from range(5)
        raise ValueError("window 5 is damaged")

    seen = []
    with pytest.raises(ValueError, match="window 5 is damaged"):
        for item in prefetch(items(), depth):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    stream = prefetch(items(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert not any(t.name == "emodraw-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) < 10  # it ran at most `depth` (+ the item in hand) ahead, then stopped


def test_serial_worker_runs_in_order_and_surfaces_errors():
    done: list[int] = []
    with SerialWorker() as worker:
        for i in range(50):
            worker.submit(done.append, i)
    assert done == list(range(50))

    def fail(i: int) -> None:
        raise OSError(f"disk full at {i}")

    worker = SerialWorker()
    worker.submit(fail, 7)
    with pytest.raises(OSError, match="disk full at 7"):
        worker.submit(done.append, 99)  # the next submit waits for the failed job
    worker.close()
    assert 99 not in done
