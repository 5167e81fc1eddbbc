"""ONNX Runtime on the CPU: one batch at a time on 2 intra-op threads, or 2 batches at once on one thread each.

    python bench/ort_parallel.py MODEL_DIR MODEL.onnx CORPUS.parquet --rows 400 --rounds 4 [--busy]
    python bench/ort_parallel.py MODEL_DIR MODEL.onnx CORPUS.parquet --rows 400 --rounds 4 --budgets 384,512,768,1024

The same batches (sorted by length and packed under a token budget, as `emodraw-batch run` packs
them) through one session, the variants alternated round by round; prints each round's seconds.
Without --budgets: `seq` (one batch at a time, 2 intra-op threads: the ONNX Runtime script) against
`par` (2 batches at once, 1 thread each: `OnnxForward`) at 1,024 tokens, with the largest
difference of their probabilities and the share of equal labels. With --budgets: `par` at each
budget. `--busy` runs a busy Python process beside it (one core's worth of other work: the run's own
threads and Prefect's server on a small machine). The measurements behind `OnnxForward` and
`device.CPU_ONNX_BATCH_TOKENS` (bench/CPU.md).
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emodraw_batch.inference.batching import pack  # noqa: E402

THREADS = 2


def batches(ids: list[list[int]], budget: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    lengths = np.array([len(i) for i in ids])
    out = []
    for rows in pack(lengths, budget):
        width = int(lengths[rows].max())
        input_ids = np.zeros((len(rows), width), np.int64)
        for r, i in enumerate(rows):
            input_ids[r, : lengths[i]] = ids[i]
        out.append((rows, input_ids, (np.arange(width)[None] < lengths[rows][:, None]).astype(np.int64)))
    return out


def session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def seq(sess: ort.InferenceSession, work: list, rows: int) -> np.ndarray:
    out = np.empty((rows, 6), np.float32)
    for b, x, m in work:
        out[b] = sess.run(None, {"input_ids": x, "attention_mask": m})[0]
    return out


def par(sess: ort.InferenceSession, work: list, rows: int) -> np.ndarray:
    out = np.empty((rows, 6), np.float32)
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for item in work:
        todo.put(item)

    def worker() -> None:
        while True:
            try:
                b, x, m = todo.get_nowait()
            except queue.Empty:
                return
            out[b] = sess.run(None, {"input_ids": x, "attention_mask": m})[0]

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="Checkpoint folder (its tokenizer.json).")
    parser.add_argument("onnx", help="The exported model.onnx.")
    parser.add_argument("corpus", help="Parquet file with a `text` column.")
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--budgets", default="", help="Compare `par` at these token budgets instead.")
    parser.add_argument("--busy", action="store_true", help="A busy process beside it.")
    args = parser.parse_args()

    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(128)
    ids = [e.ids for e in tok.encode_batch(pq.read_table(args.corpus)["text"].to_pylist()[: args.rows])]
    one, split = session(args.onnx, 1), session(args.onnx, THREADS)
    if args.budgets:
        variants = {f"par {b}": (lambda w=batches(ids, int(b)): par(one, w, len(ids))) for b in args.budgets.split(",")}
    else:
        work = batches(ids, 1024)
        variants = {"seq": lambda: seq(split, work, len(ids)), "par": lambda: par(one, work, len(ids))}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, np.ndarray] = {}
    try:
        for r in range(args.rounds):
            for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                started = time.perf_counter()
                outputs[name] = variants[name]()
                seconds[name].append(round(time.perf_counter() - started, 2))
    finally:
        if busy:
            busy.kill()
    print(json.dumps(seconds))
    if "seq" in outputs:
        a, b = outputs["seq"], outputs["par"]
        print(f"max |d| {float(np.abs(a - b).max())}, labels equal {float((a.argmax(1) == b.argmax(1)).mean()):.4f}")


if __name__ == "__main__":
    main()
