"""Forward passes only: the eager path against the kernel fast paths of issue 39 (compile, mask-free batches).

    python bench/kernel_paths.py --size tiny --rows 2000 --rounds 3 [--device cpu] [--variants eager,equal,compile,compile-equal]

Builds (or reuses, in --work) an ALBERT of --size with random weights (bench/bench.py's checkpoint)
and bench/gpu_corpus.py's texts (tweets of 4-32 words, 20% reviews), tokenizes them once per
variant, then runs every variant on the same rows, round by round interleaved (so a change in the
machine's load hits all alike), and prints per variant the median forward seconds over the rounds,
rows/s, the share of tokens in batches run without a mask, the first round's extra time (torch.compile's
compilation), the graphs Dynamo compiled, and max |dp| against the eager path. No Parquet, no Prefect.

On a CPU this says what compile and mask-free batches do to CPU kernels, not what they do on a GPU
(bench/gpu.py's fastpaths step measures that).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

EQUAL_SHARE = 1 / 16
VARIANTS: dict[str, dict[str, Any]] = {
    "eager": {},
    "equal": {"equal_lengths": EQUAL_SHARE},
    "compile": {"compile": True},
    "compile-equal": {"compile": True, "equal_lengths": EQUAL_SHARE},
}


def unmasked_share(clf: Any, ids: Any) -> float:
    """Share of the padded tokens that run in batches without padding (attention_mask=None)."""
    total = unmasked = 0
    for _, input_ids, lengths in clf.batcher.batches(ids):
        total += input_ids.size
        unmasked += input_ids.size if int(lengths.min()) == input_ids.shape[1] else 0
    return unmasked / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "small", "base"), default="tiny")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-tokens", type=int, default=None, help="Token budget (default: the package's for the device).")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/emodraw-kernels"))
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import torch
    from torch._dynamo.utils import counters

    import bench as B
    import gpu_corpus
    from emodraw_batch.inference.classifier import EmotionClassifier

    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    model = B.checkpoint(args.work, args.size, *B.sentences("synthetic", B.SHARED, 0))
    corpus = gpu_corpus.generate(args.work / f"corpus-{args.rows}", args.rows, 0.2, 1, workers=1)
    texts = [t for f in sorted(corpus.glob("*.parquet")) for t in pq.read_table(f, columns=["text"])["text"].to_pylist()]
    names = [n for n in args.variants.split(",") if n]
    clfs, ids, seconds, first, graphs = {}, {}, {n: [] for n in names}, {}, {}
    for name in names:
        clfs[name] = EmotionClassifier(str(model), device=args.device, precision=args.precision,
                                       batch_tokens=args.batch_tokens, **VARIANTS[name])
        ids[name], _ = clfs[name].encode(texts)
    probs: dict[str, np.ndarray] = {}
    for k in range(args.rounds + 1):  # round 0: warm-up (compilation), reported apart
        for name in names:
            before = counters["stats"]["unique_graphs"]
            t = time.perf_counter()
            probs[name] = clfs[name].forward(ids[name])
            took = time.perf_counter() - t
            if k == 0:
                first[name], graphs[name] = took, counters["stats"]["unique_graphs"] - before
            else:
                seconds[name].append(took)
    ref = probs[names[0]]
    rows = []
    for name in names:
        median = statistics.median(seconds[name])
        rows.append({"variant": name, "fast_paths": clfs[name].fast_paths_on(), "forward_s": median,
                     "rows_per_s": len(texts) / median, "x_first": statistics.median(seconds[names[0]]) / median,
                     "warm_up_extra_s": first[name] - median, "graphs": graphs[name],
                     "unmasked_share": unmasked_share(clfs[name], ids[name]),
                     "max_abs_dprob": float(np.abs(probs[name] - ref).max()),
                     "rounds_s": [round(s, 3) for s in seconds[name]]})
    threads = torch.get_num_threads()
    print(f"ALBERT-{args.size} shape, {len(texts):,} rows, {args.device} {args.precision}, budget "
          f"{clfs[names[0]].batch_tokens} tokens, {threads} threads, torch {torch.__version__}, {args.rounds} rounds (medians)")
    print("| variant | forward s | rows/s | x eager | unmasked tokens | first round extra s | graphs compiled | max \\|Δp\\| vs eager |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['forward_s']:.2f} | {r['rows_per_s']:,.0f} | {r['x_first']:.2f}x | {r['unmasked_share']:.1%} "
              f"| {r['warm_up_extra_s']:.1f} | {r['graphs']} | {r['max_abs_dprob']:.1e} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
