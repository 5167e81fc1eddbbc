"""Forward passes only, in one process: emodraw's torch path vs ONNX Runtime on the same batches.

    python bench/forward.py --model DIR --corpus CORPUS.parquet [--rounds 3] [--variants torch-fp32,ort-fp32,...]

Tokenizes the corpus once, packs it with emodraw's sorted token-budget batching, then runs
every variant batch by batch, interleaved (batch 1 on every variant, then batch 2...; so a
change in the machine's load hits them all alike), and prints per variant the median over
rounds of its summed forward seconds, the ratio to the first variant and the label agreement
with torch fp32. No Parquet, no Prefect: this isolates the runtime and its settings.

Variants: torch-fp32, torch-int8, torch-bf16 (emodraw's EmotionClassifier at that precision;
torchgelu-* the same with loading.fuse_gelu applied),
ort-fp32, ort-int8 (bench/onnx_baseline.py's export). A suffix @N sets the token budget
(e.g. torch-fp32@2048); the default is emodraw's CPU budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", default="torch-fp32,ort-fp32,torch-int8,ort-int8")
    parser.add_argument("--cache", type=Path, help="ONNX export folder (default: MODEL/onnx).")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import torch

    from emodraw_batch.inference.batching import pack
    from emodraw_batch.inference.device import CPU_BATCH_TOKENS
    from emodraw_batch.inference.batcher import pad_batch
from emodraw_batch.inference.classifier import EmotionClassifier

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = pq.read_table(args.corpus, columns=["text"])["text"].to_pylist()
    variants = args.variants.split(",")
    runners = {}
    ids = None
    for v in variants:
        name, _, budget = v.partition("@")
        budget = int(budget) if budget else CPU_BATCH_TOKENS
        runtime, precision = name.split("-")
        if runtime in ("torch", "torchgelu"):  # torchgelu: with loading.fuse_gelu applied
            clf = EmotionClassifier(str(args.model), device="cpu", precision=precision, batch_tokens=budget)
            if runtime == "torchgelu":
                from emodraw_batch.inference.loading import fuse_gelu

                fuse_gelu(clf.model)
            runners[v] = (lambda c: lambda i, m: c._run(i, m).numpy())(clf)
        else:
            import onnxruntime as ort

            from onnx_baseline import export

            cache = args.cache or args.model / "onnx"
            path = cache / ("model-int8.onnx" if precision == "int8" else "model.onnx")
            export(args.model, path, precision == "int8")
            options = ort.SessionOptions()
            if args.threads:
                options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

            def run(i: np.ndarray, m: np.ndarray, s=session) -> np.ndarray:
                logits = s.run(None, {"input_ids": i, "attention_mask": m})[0]
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                return e / e.sum(axis=1, keepdims=True)

            runners[v] = run
        if ids is None:
            clf0 = EmotionClassifier(str(args.model), device="cpu", precision="fp32")
            ids, _ = clf0.encode(texts)
            pad_id = clf0.batcher.pad_id
        runners[v] = (runners[v], budget)

    lengths = np.array([len(i) for i in ids])
    flat = np.concatenate([np.asarray(i, dtype=np.int64) for i in ids])
    starts = np.cumsum(lengths) - lengths
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    probs: dict[str, np.ndarray] = {}
    # Batch by batch, every variant in turn (rotating who goes first): a change in the machine's
    # load hits all variants alike, which matters on a shared 2-core machine.
    batches = {v: list(pack(lengths, runners[v][1])) for v in variants}
    plans = {v: [pad_batch(flat, starts[b], lengths[b], pad_id) for b in batches[v]] for v in variants}
    steps = max(len(b) for b in batches.values())
    for r in range(args.rounds):
        spent = dict.fromkeys(variants, 0.0)
        results: dict[str, list[np.ndarray]] = {v: [] for v in variants}
        for step in range(steps):
            turn = variants[(step + r) % len(variants):] + variants[: (step + r) % len(variants)]
            for v in turn:
                if step >= len(plans[v]):
                    continue
                fn = runners[v][0]
                started = time.perf_counter()
                results[v].append(fn(*plans[v][step]))
                spent[v] += time.perf_counter() - started
        for v in variants:
            seconds[v].append(spent[v])
            out = np.empty((len(ids), results[v][0].shape[1]), dtype=np.float32)
            out[np.concatenate(batches[v])] = np.concatenate(results[v])
            probs[v] = out
        print(f"  round {r + 1}: " + ", ".join(f"{v} {spent[v]:.2f} s" for v in variants), file=sys.stderr, flush=True)
    ref = probs.get("torch-fp32", probs[variants[0]])
    first = statistics.median(seconds[variants[0]])
    rows = []
    print(f"{len(ids)} rows, mean {lengths.mean():.1f} tokens; threads {torch.get_num_threads()}; {args.rounds} rounds\n")
    print("| variant | median s | rows/s | × first | labels = torch fp32 | max \\|Δp\\| | runs s |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for v in variants:
        med = statistics.median(seconds[v])
        agree = float((probs[v].argmax(1) == ref.argmax(1)).mean())
        diff = float(np.abs(probs[v] - ref).max())
        rows.append({"variant": v, "median_s": med, "agreement": agree, "max_abs_dprob": diff, "runs": seconds[v]})
        print(f"| {v} | {med:.2f} | {len(ids) / med:.1f} | {first / med:.2f}x | {agree:.2%} | {diff:.1e} | "
              f"{', '.join(f'{s:.2f}' for s in seconds[v])} |")
    print(json.dumps(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
