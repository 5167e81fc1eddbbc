"""The baseline: the `transformers.pipeline` loop a user would write to label a Parquet file.

    python bench/baseline.py CORPUS.parquet OUT.parquet --model DIR [--device cpu] [--threads N]
        [--batch-size 32] [--dtype fp32|bf16] [--rows N]

Reads the text column, runs `pipeline("text-classification", top_k=None)` with
batch_size=32 (bench/gpu.py: 64) and truncation=True, in fp32 or with the model loaded in
bf16 (`dtype=torch.bfloat16`), writes the labelled Parquet (emotion, score and one
prob_<label> column per label), and prints its timings as one JSON line on stdout.
`bench/bench.py` and `bench/gpu.py` run it in its own process, so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import time

STARTED = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("output")
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="Model weights' dtype (pipeline dtype=).")
    parser.add_argument("--rows", type=int, default=None, help="Label only the corpus's first ROWS rows.")
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    extra = {"dtype": torch.bfloat16} if args.dtype == "bf16" else {}
    classify = pipeline("text-classification", model=args.model, top_k=None, device=args.device, **extra)
    loaded = time.perf_counter()

    table = pq.read_table(args.corpus)
    if args.rows is not None:
        table = table.slice(0, args.rows)
    texts = table["text"].to_pylist()
    labels = [classify.model.config.id2label[i] for i in range(classify.model.config.num_labels)]
    results = [
        {s["label"]: s["score"] for s in scores}
        for scores in classify(texts, batch_size=args.batch_size, truncation=True)
    ]
    columns = {
        "emotion": pa.array([max(r, key=r.get) for r in results], pa.string()),
        "score": pa.array([max(r.values()) for r in results], pa.float32()),
        **{f"prob_{label}": pa.array([r[label] for r in results], pa.float32()) for label in labels},
    }
    for name, column in columns.items():
        table = table.append_column(name, column)
    pq.write_table(table, args.output, compression="zstd")
    done = time.perf_counter()
    cuda = args.device.startswith("cuda") or args.device.isdigit()
    print(
        json.dumps(
            {
                "rows": table.num_rows,
                "startup_s": loaded - STARTED,  # imports + pipeline() (model load)
                "label_s": done - loaded,  # read + classify + write
                "dtype": args.dtype,
                "batch_size": args.batch_size,
                "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            }
        )
    )


if __name__ == "__main__":
    main()
