"""Host-only rate (issue 39 item 2): the real labelling pipeline with a forward pass that returns at once.

    python bench/host.py CORPUS --model MODEL [--cores 1,2,4,...] [--window-rows 50000] [--languages en]

For each core count, a fresh process pinned to that many cores (sched_setaffinity; torch, OpenMP and
the Rust tokenizer get as many threads) runs `runner.label_shard` over every shard of CORPUS with
the model's own tokenizer, language detection, dedup, writer and Parquet output, but a stand-in
backend whose probabilities are uniform and ready immediately. What it reports is the rate the host
can feed a GPU: rows/s end to end, and each stage's busy seconds and rows/s if it ran alone (clean,
detect languages, dedup plan, tokenize, model wait, build the output table); reading and the Parquet
write are the rest. Which stages share a thread: clean + detect (one thread), dedup + tokenize (another),
the model loop, the writer (job/runner.py `label_windows`). The GPU machine has 16
cores; the issue asks for >= 2x the GPU's steady rate there (>= 100,000 rows/s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


class InstantForward:
    """A backend that returns uniform probabilities at once: the host's stages alone remain."""

    def __init__(self, labels: int) -> None:
        self.labels = labels

    def run(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return np.full((len(lengths), self.labels), 1.0 / self.labels, dtype=np.float32)

    def pending(self, rows: int, order: np.ndarray, outputs: list[np.ndarray]) -> Any:
        from emodraw_batch.inference.backends import Pending

        return Pending(rows, order, np.concatenate(outputs) if outputs else np.zeros((0, self.labels), np.float32))


def timed(stats: dict[str, float], key: str, fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stats[key] += time.perf_counter() - t

    return call


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One pinned process: label the corpus with the stand-in forward, time each stage."""
    os.sched_setaffinity(0, set(range(spec["cores"])))
    from emodraw_batch.config import RunConfig
    from emodraw_batch.inference.classifier import EmotionClassifier
    from emodraw_batch.job import runner

    clf = EmotionClassifier(spec["model"], device="cpu", precision="fp32", runtime="torch",
                            batch_tokens=spec["batch_tokens"])
    clf.backend = InstantForward(len(clf.labels))
    from emodraw_batch.job import dedup, windows

    stats = dict.fromkeys(("clean_s", "detect_s", "dedup_s", "tokenize_s", "model_s", "label_table_s"), 0.0)
    # Each stage where the pipeline calls it (module attributes, looked up at each call).
    windows.prepare = timed(stats, "clean_s", windows.prepare)
    windows.language.detect_rows = timed(stats, "detect_s", windows.language.detect_rows)
    dedup.Repeats.plan = timed(stats, "dedup_s", dedup.Repeats.plan)
    clf.encode = timed(stats, "tokenize_s", clf.encode)
    runner.label_table = timed(stats, "label_table_s", runner.label_table)
    clf.submit, clf.collect = timed(stats, "model_s", clf.submit), timed(stats, "model_s", clf.collect)
    config = RunConfig(model=spec["model"], device="cpu", precision="fp32", runtime="torch",
                       window_rows=spec["window_rows"], shard_rows=spec["shard_rows"], languages=spec["languages"],
                       batch_tokens=clf.batch_tokens)
    out = tempfile.mkdtemp(prefix="emodraw-host-")
    job = runner.plan(runner.validate([spec["corpus"]], out, config, overwrite=True))
    started = time.perf_counter()
    rows = sum(runner.label_shard(shard, config, out, None, clf).rows for shard in job.todo)
    wall = time.perf_counter() - started
    stages = {k[:-2]: {"busy_s": round(v, 2), "rows_per_s_alone": round(rows / v) if v else None}
              for k, v in stats.items()}
    return {"cores": spec["cores"], "rows": rows, "wall_s": round(wall, 2), "rows_per_s": round(rows / wall),
            "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus")
    parser.add_argument("--model", required=True)
    parser.add_argument("--cores", default=",".join(str(c) for c in (1, 2, 4, 8, 16) if c <= os.cpu_count()))
    parser.add_argument("--window-rows", type=int, default=50_000)
    parser.add_argument("--shard-rows", type=int, default=1_000_000)
    parser.add_argument("--batch-tokens", type=int, default=262_144)  # the GPU's budget: few, large batches
    parser.add_argument("--languages", default="en")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    results = []
    for cores in [int(c) for c in args.cores.split(",") if c]:
        spec = {"corpus": args.corpus, "model": args.model, "cores": cores, "window_rows": args.window_rows,
                "shard_rows": args.shard_rows, "batch_tokens": args.batch_tokens, "languages": args.languages}
        threads = {k: str(cores) for k in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MKL_NUM_THREADS")}
        done = subprocess.run([sys.executable, __file__, args.corpus, "--model", args.model, "--worker", json.dumps(spec)],
                              env={**os.environ, **threads, "TOKENIZERS_PARALLELISM": "true", "HF_HUB_OFFLINE": "1"},
                              capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{cores:>3} core(s): {r['rows']:,} rows in {r['wall_s']} s = {r['rows_per_s']:,} rows/s; "
              + ", ".join(f"{k} {v['busy_s']} s ({v['rows_per_s_alone'] or 0:,}/s alone)" for k, v in r["stages"].items()),
              flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
