"""A large synthetic corpus, generated fast on every core: the GPU benchmark's input.

    python bench/gpu_corpus.py OUT_DIR --rows 5000000 [--review-share 0.2] [--seed 0] [--workers 16]

Tweets are one sentence of 4-32 words; reviews (`review_share` of the rows) join 3-6 such
sentences, cut so that every text stays within 126 words plus full stops (within 128 tokens
of the benchmark's word-level tokenizer: nothing is truncated). Words are drawn with Zipf-like
weights from bench/bench.py's vocabulary, so nearly every text is distinct (a corpus that
repeats a small pool would flatter a labeller that skips repeated texts).

The rows are written as one Parquet file per worker (`part-00000.parquet`, ...), ids 0..rows-1
in file order, row groups of 10,000: the folder is the corpus (`emodraw-batch run OUT_DIR`).
Every file depends only on (rows, review_share, seed, its index), never on the worker count.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench import VOCAB  # bench/bench.py

PART_ROWS = 250_000  # rows per file: the unit of work, so the output never depends on the core count
MAX_WORDS = 120  # a review's words, before its full stops: <= 126 tokens with [CLS] and [SEP]


def _texts(rows: int, review_share: float, rng: np.random.Generator) -> list[str]:
    words = np.array(VOCAB, dtype=object)
    weights = 1.0 / np.arange(1, len(VOCAB) + 1)
    weights /= weights.sum()
    is_review = rng.random(rows) < review_share
    sentences = np.where(is_review, rng.integers(3, 7, rows), 1)
    lengths = rng.integers(4, 33, int(sentences.sum()))
    drawn = words[rng.choice(len(VOCAB), size=int(lengths.sum()), p=weights)].tolist()
    texts, word, sentence = [], 0, 0
    for n in sentences.tolist():
        parts, used = [], 0
        for k in lengths[sentence : sentence + n].tolist():
            k = min(k, MAX_WORDS - used)
            if k <= 0:
                break
            parts.append(" ".join(drawn[word : word + k]))
            word += k
            used += k
        sentence += n
        texts.append(". ".join(parts) + "." if n > 1 else parts[0])
    return texts


def write_part(folder: str, index: int, first: int, rows: int, review_share: float, seed: int) -> int:
    """Write part `index` (rows first..first+rows-1); returns its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng([seed, index])
    table = pa.table({"id": pa.array(np.arange(first, first + rows, dtype=np.int64)),
                      "text": pa.array(_texts(rows, review_share, rng), pa.string())})
    pq.write_table(table, Path(folder) / f"part-{index:05d}.parquet", row_group_size=10_000)
    return rows


def generate(folder: Path, rows: int, review_share: float = 0.2, seed: int = 0, workers: int | None = None) -> Path:
    """Write `rows` rows into `folder` (made anew) on `workers` processes (default: all cores)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    parts = [(i, first, min(PART_ROWS, rows - first)) for i, first in enumerate(range(0, rows, PART_ROWS))]
    workers = max(1, min(workers or os.cpu_count() or 1, len(parts)))
    if workers == 1:
        for i, first, n in parts:
            write_part(str(folder), i, first, n, review_share, seed)
        return folder
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(write_part, *zip(*[(str(folder), i, first, n, review_share, seed) for i, first, n in parts])))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--review-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    generate(args.out, args.rows, args.review_share, args.seed, args.workers)
    print(f"{args.rows:,} rows in {args.out} ({time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main()
