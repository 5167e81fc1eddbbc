"""A language-detection worker process: fastText's best guesses for lines read from stdin.

    python -m emodraw_batch.inference.language_worker MODEL_PATH

Started by `language_pool.py`, never by a user. fastText's predict holds the GIL (the
fasttext-predict binding releases it nowhere), so threads cannot spread detection over cores;
processes can. Imports nothing but the standard library and fasttext, so it starts in a fraction
of a second and stays small.

Protocol, little-endian, one request and one answer at a time:

- request: k and a size (two uint32), then `size` bytes: UTF-8 texts joined by newlines (a text
  holds none: the caller replaced them, as fastText reads one line per text);
- answer: n (uint32, texts x k), the size of the label table (uint32), n probabilities (float32),
  n indices into the table (uint16), then the table: the labels met, joined by newlines. A text
  with fewer than k guesses gets probability 0 and the label `__label__` in the missing places,
  which is what `LanguageDetector.scores` assumes of an empty answer.

It ends when stdin closes (its parent ended or closed the pool). Ctrl-C in a terminal reaches the
whole process group: the parent decides when to stop, so SIGINT is ignored here.
"""

from __future__ import annotations

import signal
import struct
import sys
from array import array
from typing import BinaryIO

REQUEST = struct.Struct("<II")
ANSWER = struct.Struct("<II")
NONE = "__label__"  # the label of a missing guess: in no `--languages`, so it counts for none


def answer(predict: object, data: bytes, k: int) -> bytes:
    """The answer to one request: every line's best k guesses."""
    probs, index = array("f"), array("H")
    table: dict[str, int] = {NONE: 0}
    for line in data.split(b"\n"):
        found = predict(line + b"\n", k, 0.0, "replace")  # type: ignore[operator]
        for p, label in found:
            probs.append(p)
            index.append(table.setdefault(label, len(table)))
        for _ in range(k - len(found)):
            probs.append(0.0)
            index.append(0)
    labels = "\n".join(table).encode()
    return ANSWER.pack(len(probs), len(labels)) + probs.tobytes() + index.tobytes() + labels


def serve(model_path: str, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer requests until stdin closes."""
    import fasttext

    predict = fasttext.load_model(model_path).f.predict
    while True:
        head = stdin.read(REQUEST.size)
        if len(head) < REQUEST.size:
            return
        k, size = REQUEST.unpack(head)
        data = stdin.read(size)
        if len(data) < size:
            return
        stdout.write(answer(predict, data, k))
        stdout.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
