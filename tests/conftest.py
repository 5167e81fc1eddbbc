"""Shared fixtures: a tiny offline ALBERT checkpoint and Parquet corpora made on the fly.

Nothing here downloads anything: HF_HUB_OFFLINE=1, and Prefect gets its own home
with analytics off and a generous server start-up timeout.
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


def labels(out: Path) -> pa.Table:
    """All output rows in shard order (shard names sort by file, then row group)."""
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "labels").glob("*.parquet"))])


def assert_same_labels(a: pa.Table, b: pa.Table) -> None:
    """Same rows, order, labels and passthrough; probabilities within 1e-5."""
    import numpy as np

    assert a.num_rows == b.num_rows and a.schema.names == b.schema.names
    for name in ("id", "text", "emotion", "status", "n_tokens", "truncated"):
        assert a[name].to_pylist() == b[name].to_pylist(), name
    for name in [n for n in a.schema.names if n.startswith("prob_")] + ["score"]:
        x = a[name].to_numpy(zero_copy_only=False).astype(np.float64)
        y = b[name].to_numpy(zero_copy_only=False).astype(np.float64)
        np.testing.assert_allclose(x, y, atol=1e-5, equal_nan=True, err_msg=name)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random ALBERT emotion classifier saved with save_pretrained (safetensors)."""
    from emodraw_batch.train.from_scratch import build_albert, train_tokenizer

    folder = tmp_path_factory.mktemp("tiny-albert")
    tokenizer = train_tokenizer(make_texts(400, seed=1) + WORDS, vocab_size=300)
    # Short position limit so that truncation is easy to exercise.
    # A wide initialiser makes the random model's probabilities far from uniform, so that
    # any change in batching would show in the outputs.
    build_albert(folder, tokenizer, size="tiny", max_position_embeddings=64, seed=0, initializer_range=0.5)
    return str(folder)


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """One Prefect test server (temporary SQLite database) for the whole session; yields its API URL.

    Also exported as PREFECT_API_URL, so `emodraw-batch` subprocesses report to it instead of
    each starting a temporary server of their own.
    """
    import flows  # noqa: F401  (sets emodraw's Prefect defaults before Prefect is imported)
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        url = str(PREFECT_API_URL.value())
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            os.environ.pop("PREFECT_API_URL", None)
