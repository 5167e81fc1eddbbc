"""Shared fixtures: a tiny offline ALBERT checkpoint and Parquet corpora made on the fly.

Nothing here downloads anything: HF_HUB_OFFLINE=1, and Prefect gets its own home
with analytics off and a generous server start-up timeout.

Everything a test compares is the same in every session: the tiny checkpoint is built from a
deterministic tokenizer and seed, so a tolerance that holds once holds every time.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="emodraw-prefect-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# One BLAS/OpenMP thread per process: tests start several processes (Dask workers, CLI runs)
# on a 2-core machine, and oversubscribed OpenMP threads spin and crawl.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
# ONNX exports of the test checkpoints go to a fresh cache, never the user's ~/.cache/emodraw-batch.
os.environ["EMODRAW_CACHE"] = tempfile.mkdtemp(prefix="emodraw-cache-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

# One tolerance for "the same maths, another operation order": two fp32 computations that are equal
# in exact arithmetic (another batch shape or padding, a fused kernel for the same formula, other
# weights storage, a softmax that sums to 1) differ only by rounding. fp32's epsilon is ~1.2e-7; a
# few ulps per layer accumulate over the model's layers and the softmax, so values of order 1
# (probabilities in [0, 1], mean losses) differ by up to ~1e-6 (measured: 1.8e-6 for the fused GELU
# on the wide-initialised test model). 1e-5 covers that with margin and is still 1000x below any
# difference of maths (bf16: ~1e-2, int8: ~5e-3), which get tolerances of their own.
SAME_MATHS_ATOL = 1e-5

WORDS = (
    "i feel happy sad angry afraid loved surprised today really so very not at all the this that my "
    "friend work home night morning rain sun coffee train phone dog cat movie book song review product "
    "great terrible lovely awful scary shocking calm tired proud lonely hopeful furious nervous amazed"
).split()


def make_texts(n: int, seed: int = 0, max_words: int = 40) -> list[str]:
    """Deterministic texts with a wide length mix (1 to max_words words)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words))) for _ in range(n)]


def write_corpus(path: Path, texts: list[str], row_group_size: int = 64, start_id: int = 0, **extra) -> Path:
    table = pa.table(
        {"id": pa.array(range(start_id, start_id + len(texts)), pa.int64()), "text": pa.array(texts, pa.string()), **extra}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def wait_for(predicate, what: str, seconds: float = 120.0, poll: float = 0.05):
    """Poll `predicate` until it returns something truthy (returned), or fail after `seconds`: no sleeps of a guessed length."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(poll)
    raise AssertionError(f"gave up after {seconds:.0f} s waiting for {what}")


def labels(out: Path) -> pa.Table:
    """All output rows in shard order (shard names sort by file, then row group)."""
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "labels").glob("*.parquet"))])


def assert_same_labels(a: pa.Table, b: pa.Table) -> None:
    """Same rows, order, labels and passthrough; probabilities within SAME_MATHS_ATOL."""
    import numpy as np

    assert a.num_rows == b.num_rows and a.schema.names == b.schema.names
    for name in ("id", "text", "emotion", "status", "n_tokens", "truncated"):
        assert a[name].to_pylist() == b[name].to_pylist(), name
    for name in [n for n in a.schema.names if n.startswith("prob_")] + ["emotion_score"]:
        x = a[name].to_numpy(zero_copy_only=False).astype(np.float64)
        y = b[name].to_numpy(zero_copy_only=False).astype(np.float64)
        np.testing.assert_allclose(x, y, atol=SAME_MATHS_ATOL, equal_nan=True, err_msg=name)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random ALBERT emotion classifier saved with save_pretrained (safetensors)."""
    from emodraw_batch.train.from_scratch import build_albert, train_tokenizer

    folder = tmp_path_factory.mktemp("tiny-albert")
    # BPE, not WordPiece: the WordPiece trainer breaks ties in hash-map order, so its vocabulary (and
    # hence every token id, probability and label of the tests) changed from session to session.
    tokenizer = train_tokenizer(make_texts(400, seed=1) + WORDS, vocab_size=300, kind="bpe")
    # Short position limit so that truncation is easy to exercise.
    # A wide initialiser makes the random model's probabilities far from uniform (mean top probability
    # 0.52, four of the six labels), so that any change in batching would show in the outputs. Not wider:
    # large random weights amplify rounding from layer to layer, and the model's fp32 probabilities
    # themselves drift from their exact (fp64) values: 9e-7 at 0.3, 5e-6 at 0.4, 1.4e-5 at 0.5, more
    # than SAME_MATHS_ATOL, so that two orders of the same maths failed it (test_core checks this bound).
    build_albert(folder, tokenizer, size="tiny", max_position_embeddings=64, seed=0, initializer_range=0.3)
    return str(folder)


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """One Prefect test server (temporary SQLite database) for the whole session; yields its API URL.

    Also exported as PREFECT_API_URL, so `emodraw-batch` subprocesses report to it instead of
    each starting a temporary server of their own. Its port is held by this process for the whole
    session (tests/prefect_server.py), so no other process on the machine can answer in its place.
    """
    import emodraw_flows  # noqa: F401  (sets emodraw's Prefect defaults before Prefect is imported)
    from prefect_server import held_port_harness

    with held_port_harness(startup_timeout=180) as url:
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            os.environ.pop("PREFECT_API_URL", None)
