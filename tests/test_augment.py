"""tools/augment_texts.py: perturbed copies of a corpus for distillation, deterministic, labels never used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

TOOL = Path(__file__).resolve().parents[1] / "tools" / "augment_texts.py"


def augment(src: Path, out: Path, *args: str) -> list[str]:
    subprocess.run([sys.executable, str(TOOL), str(src), "--output", str(out), *args], check=True, capture_output=True)
    return pq.read_table(out)["text"].to_pylist()


def test_copies_are_new_texts_made_of_the_corpus_words_and_deterministic(tmp_path):
    texts = [f"i feel {w} about the {n} today and tomorrow" for w in ("happy", "sad", "angry", "scared") for n in
             ("rain", "news", "game", "trip", "exam")]
    src = tmp_path / "train.txt"
    src.write_text("".join(f"{t};{'joy' if i % 2 else 'sadness'}\n" for i, t in enumerate(texts)))
    copies = augment(src, tmp_path / "a.parquet", "--copies", "2")
    assert 20 <= len(copies) <= 40  # up to two per text; unchanged or repeated copies are dropped
    assert len(set(copies)) == len(copies) and not set(copies) & set(texts)
    vocabulary = {w for t in texts for w in t.split()}
    assert all(c and set(c.split()) <= vocabulary for c in copies)  # no label ever leaks into a text
    assert augment(src, tmp_path / "b.parquet", "--copies", "2") == copies  # the same seed, the same copies
    assert augment(src, tmp_path / "c.parquet", "--copies", "2", "--seed", "1") != copies
