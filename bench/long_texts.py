"""Long texts: accuracy of `--long-texts truncate` against each chunk aggregation, and what chunking costs.

    python bench/long_texts.py                      # shipped model + ALBERT-base shape, CPU
    python bench/long_texts.py --per-mix 300 --base-texts 60

Evaluation texts are built from the Emotions dataset's TEST split only (`--data`, default
../shared/data/emotion/test.txt; never copied into the project): each joins sentences of the
split until it reaches a drawn length of 150-600 tokens (the model's tokenizer), in five mixes
whose majority label (by sentence count) is the text's gold label:

    single    every sentence has the label
    majority  70% of the sentences have it, the rest other labels, in random order
    early     55% have it and come first          late    55% have it and come last
    spread    55% have it, spread evenly among the others

Sentences are drawn with replacement (the split has 2,000). For each model the script runs
truncate mode and chunk mode (one run; the three aggregations are applied to the same chunk
probabilities) and prints accuracy and macro F1 per mix. Then throughput: `classify` (model
loaded, the run's labelling loop, default runtime) on a corpus of single test sentences where
20% of the rows are long texts, in truncate and in chunk mode, rows/s median of --repeat.
The ALBERT-base-shaped checkpoint has random weights (bench/bench.py builds it): its accuracy is
chance, it shows the mechanics and the cost at the real model's size.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MIXES = ("single", "majority", "early", "late", "spread")
AGGREGATIONS = ("weighted", "mean", "max")


def read_split(path: Path) -> tuple[list[str], list[str]]:
    rows = [line.rsplit(";", 1) for line in path.read_text().splitlines() if ";" in line]
    return [t.strip() for t, _ in rows], [label.strip() for _, label in rows]


def long_text(rng: random.Random, by_label: dict[str, list[int]], counts: list[int], texts: list[str],
              label: str, mix: str) -> str:
    """Sentences (indices into the split) until a drawn 150-600 tokens; `label` the majority."""
    target = rng.randint(150, 600)
    share = {"single": 1.0, "majority": 0.7}.get(mix, 0.55)
    others = [x for x in by_label if x != label]
    picked: list[tuple[bool, int]] = []
    used = 0
    while used < target:
        own = sum(1 for is_own, _ in picked if is_own)
        is_own = own < share * (len(picked) + 1) or len(picked) == 0
        i = rng.choice(by_label[label] if is_own else by_label[rng.choice(others)])
        picked.append((is_own, i))
        used += counts[i] + 1
    own = [i for is_own, i in picked if is_own]
    rest = [i for is_own, i in picked if not is_own]
    if mix == "early":
        order = own + rest
    elif mix == "late":
        order = rest + own
    elif mix == "spread":  # evenly: own sentence k at position round(k * n / len(own))
        order, n = [], len(picked)
        slots = {round(k * n / len(own)) for k in range(len(own))}
        own_it, rest_it = iter(own), iter(rest)
        order = [next(own_it) if p in slots else next(rest_it, None) for p in range(n)]
        order = [i for i in order if i is not None] + list(own_it) + list(rest_it)
    else:
        order = own + rest
        rng.shuffle(order)
    return ". ".join(texts[i] for i in order) + "."


def eval_set(split: Path, tokenizer: Any, per_mix: int, seed: int) -> dict[str, tuple[list[str], list[str]]]:
    texts, labels = read_split(split)
    counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    rng = random.Random(seed)
    out = {}
    for mix in MIXES:
        gold = [rng.choice(labels) for _ in range(per_mix)]  # the split's label frequencies
        out[mix] = ([long_text(rng, by_label, counts, texts, g, mix) for g in gold], gold)
    return out


def score(gold: list[str], probs: np.ndarray, labels: list[str]) -> tuple[float, float]:
    from emodraw_batch.analysis.metrics import report

    index = {label: i for i, label in enumerate(labels)}
    r = report([index[g] for g in gold], probs.argmax(axis=1).tolist(), labels)
    return r["accuracy"], r["macro_f1"]


def accuracy_table(model: str, sets: dict[str, tuple[list[str], list[str]]], args: argparse.Namespace) -> list[dict]:
    from emodraw_batch.inference import chunks
    from emodraw_batch.inference.classifier import EmotionClassifier

    common = dict(device="cpu", max_length=args.max_length, runtime=args.runtime)
    trunc = EmotionClassifier(model, **common)
    chunked = EmotionClassifier(model, long_texts="chunk", chunk_overlap=args.overlap, max_chunks=args.max_chunks, **common)
    rows = []
    for mix, (texts, gold) in sets.items():
        p_trunc = trunc(texts)
        ids, _cut = chunked.encode(texts)
        p_chunks = chunked.forward(ids)
        weights = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        row: dict[str, Any] = {"mix": mix, "texts": len(texts), "mean_tokens": float(ids.chunks.n_tokens.mean()),
                               "mean_chunks": float(ids.chunks.n_chunks.mean()),
                               "truncate": score(gold, p_trunc.probs, trunc.labels)}
        for how in AGGREGATIONS:
            row[how] = score(gold, chunks.aggregate(p_chunks, ids.chunks, weights, how), chunked.labels)
        rows.append(row)
    return rows


def throughput(model: str, split: Path, long_texts: list[str], args: argparse.Namespace, rows: int) -> dict[str, Any]:
    """rows/s of `classify` on a corpus with 20% long texts, truncate vs chunk, alternated, medians."""
    import emodraw_batch

    short, _ = read_split(split)
    rng = random.Random(args.seed + 1)
    corpus = [rng.choice(long_texts) if rng.random() < 0.2 else rng.choice(short) for _ in range(rows)]
    common = dict(model=model, device="cpu", max_length=args.max_length, runtime=args.runtime)
    modes = {"truncate": dict(long_texts="truncate"),
             "chunk": dict(long_texts="chunk", chunk_overlap=args.overlap, max_chunks=args.max_chunks)}
    times: dict[str, list[float]] = {m: [] for m in modes}
    outputs = {}
    for m, extra in modes.items():  # load and warm up
        emodraw_batch.classify(corpus[:64], **common, **extra)
    for _ in range(args.repeat):
        for m, extra in modes.items():
            started = time.perf_counter()
            outputs[m] = emodraw_batch.classify(corpus, **common, **extra)
            times[m].append(time.perf_counter() - started)
    result = {m: rows / statistics.median(t) for m, t in times.items()}
    result["model_tokens"] = {m: int(outputs[m]["n_tokens"].sum()) for m in modes}
    result["chunk_rows"] = int(outputs["chunk"]["n_chunks"].sum())
    result["rows"] = rows
    return result


def markdown(name: str, rows: list[dict], speed: dict[str, Any]) -> str:
    lines = [f"**{name}**", "", "| mix | texts | mean tokens | mean chunks | truncate acc / F1 | "
             + " | ".join(f"chunk {h} acc / F1" for h in AGGREGATIONS) + " |", "|---|---:|---:|---:|---:|"
             + "---:|" * len(AGGREGATIONS)]
    fmt = lambda s: f"{s[0]:.3f} / {s[1]:.3f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['mix']} | {r['texts']} | {r['mean_tokens']:.0f} | {r['mean_chunks']:.2f} | {fmt(r['truncate'])} | "
                     + " | ".join(fmt(r[h]) for h in AGGREGATIONS) + " |")
    all_ = {k: np.mean([r[k][0] for r in rows]) for k in ("truncate", *AGGREGATIONS)}
    lines.append("| all (mean of mixes) | | | | " + " | ".join(f"{all_[k]:.3f}" for k in ("truncate", *AGGREGATIONS)) + " |")
    lines += ["", f"rows/s, {speed['rows']} rows with 20% long texts: truncate {speed['truncate']:.0f}, "
              f"chunk {speed['chunk']:.0f} ({speed['chunk'] / speed['truncate']:.2f}x); chunk rows run: "
              f"{speed['chunk_rows']}, tokens seen: truncate {speed['model_tokens']['truncate']}, "
              f"chunk {speed['model_tokens']['chunk']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "emotion" / "test.txt")
    parser.add_argument("--per-mix", type=int, default=300, help="Texts per mix, shipped model.")
    parser.add_argument("--base-texts", type=int, default=40, help="Texts per mix, ALBERT-base shape.")
    parser.add_argument("--rows", type=int, default=10_000, help="Throughput corpus, shipped model.")
    parser.add_argument("--base-rows", type=int, default=300, help="Throughput corpus, ALBERT-base shape.")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--max-chunks", type=int, default=16)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-base", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/emodraw-bench"))
    args = parser.parse_args()
    if "train" in args.data.name:
        sys.exit("The evaluation is built from the test split only.")
    from transformers import AutoTokenizer

    from emodraw_batch.inference.loading import resolve_model

    models = [("shipped model (`offline`)", resolve_model("offline")[0], args.per_mix, args.rows)]
    if not args.skip_base:
        from bench import checkpoint, sentences  # bench/bench.py: the ALBERT-base-shaped random checkpoint

        pool, source = sentences("auto", args.data.parent, 0)
        models.append(("ALBERT-base shape, random weights", str(checkpoint(args.work, "base", pool, source)),
                       args.base_texts, args.base_rows))
    results = []
    for name, model, per_mix, rows in models:
        tokenizer = AutoTokenizer.from_pretrained(model)
        sets = eval_set(args.data, tokenizer, per_mix, args.seed)
        acc = accuracy_table(model, sets, args)
        speed = throughput(model, args.data, [t for texts, _ in sets.values() for t in texts], args, rows)
        print(markdown(name, acc, speed), flush=True)
        results.append({"model": name, "accuracy": acc, "throughput": speed})
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "long_texts.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
