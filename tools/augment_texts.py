"""More unlabelled texts for `emodraw-batch distill`: perturbed copies of a corpus, labels never used.

    python tools/augment_texts.py emotion/train.txt --copies 2 --output augmented.parquet

A teacher's probabilities on near-neighbours of the training texts carry more of its function
than its probabilities on the texts alone (Tang et al. 2019, "Distilling Task-Specific Knowledge
from BERT into Simple Neural Networks": masking and n-gram sampling). Each copy of a text is one
of: words dropped (15% each), words replaced by a random word of the corpus (10% each), or a
random span of 50-90% of its words. Texts are read as `emodraw-batch distill --texts` reads them
(Parquet `text` column, or `text;label` lines whose labels are ignored). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def read_texts(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return pq.read_table(path, columns=["text"])["text"].to_pylist()
    return [line.rsplit(";", 1)[0] for line in path.read_text().splitlines() if line.strip()]


def perturb(words: list[str], vocabulary: list[str], rng: random.Random) -> list[str]:
    kind = rng.randrange(3)
    if kind == 0:
        kept = [w for w in words if rng.random() >= 0.15]
        return kept or words[:1]
    if kind == 1:
        return [rng.choice(vocabulary) if rng.random() < 0.10 else w for w in words]
    size = max(1, round(len(words) * rng.uniform(0.5, 0.9)))
    start = rng.randrange(len(words) - size + 1)
    return words[start : start + size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("--copies", type=int, default=2, help="Perturbed copies of every text (default: 2).")
    parser.add_argument("--output", type=Path, required=True, help="Parquet file with a `text` column.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    texts = [t for p in args.inputs for t in read_texts(p)]
    vocabulary = sorted({w for t in texts for w in t.split()})
    seen = set(texts)
    out = []
    for text in texts:
        words = text.split()
        for _ in range(args.copies):
            new = " ".join(perturb(words, vocabulary, rng)) if words else text
            if new not in seen:  # an unchanged copy adds nothing
                seen.add(new)
                out.append(new)
    pq.write_table(pa.table({"text": pa.array(out, pa.string())}), args.output)
    print(f"{len(texts):,} texts -> {len(out):,} perturbed copies in {args.output}")


if __name__ == "__main__":
    main()
