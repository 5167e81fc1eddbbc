"""The ONNX Runtime peer: the script a CPU-speed-conscious user writes to label a Parquet file.

    python bench/onnx_baseline.py CORPUS.parquet OUT.parquet --model DIR [--int8] [--threads N] [--cache DIR]

Exports the checkpoint once to ONNX (torch.onnx.export, cached in --cache; with --int8 also
ONNX Runtime's dynamic int8 quantization of it), then runs it with onnxruntime: the fast
tokenizer called directly (no transformers, no torch once exported), texts sorted by length and
packed under a token budget (emodraw_batch.inference.batching.pack, the same batching as emodraw-batch),
softmax, labelled Parquet with the columns of bench/baseline.py. Prints its timings as one JSON
line. Needs `pip install onnxruntime onnx` (bench only; emodraw-batch does not require them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

STARTED = time.perf_counter()


def export(model_dir: Path, path: Path, int8: bool) -> float:
    """Export (and quantize) the checkpoint to `path` unless it is there already; returns seconds spent."""
    if path.is_file():
        return 0.0
    started = time.perf_counter()
    fp32 = path.with_name("model.onnx")
    if not fp32.is_file():
        import torch
        from transformers import AutoModelForSequenceClassification

        class Logits(torch.nn.Module):
            def __init__(self, model: torch.nn.Module) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

        fp32.parent.mkdir(parents=True, exist_ok=True)
        model = Logits(AutoModelForSequenceClassification.from_pretrained(model_dir).eval())
        dummy = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
        axes = {0: "batch", 1: "seq"}
        torch.onnx.export(
            model, dummy, str(fp32), input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
            opset_version=17, dynamo=False,  # the TorchScript exporter: ~1 s, where dynamo takes ~16 s
        )
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("output")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--cache", type=Path, help="Where the .onnx files go (default: MODEL/onnx).")
    parser.add_argument("--int8", action="store_true", help="ONNX Runtime dynamic int8 quantization.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()

    cache = args.cache or args.model / "onnx"
    path = cache / ("model-int8.onnx" if args.int8 else "model.onnx")
    export_s = export(args.model, path, args.int8)
    began = time.perf_counter()  # start-up below excludes the one-off export

    import numpy as np
    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from emodraw_batch.inference.batching import pack

    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    config = json.loads((args.model / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(args.max_length)
    pad = config.get("pad_token_id") or 0
    loaded = time.perf_counter()

    table = pq.read_table(args.corpus)
    ids = [e.ids for e in tokenizer.encode_batch(table["text"].to_pylist())]
    lengths = np.array([len(i) for i in ids])
    probs = np.empty((len(ids), len(labels)), dtype=np.float32)
    for batch in pack(lengths, args.batch_tokens):
        width = int(lengths[batch].max())
        input_ids = np.full((len(batch), width), pad, dtype=np.int64)
        for row, i in enumerate(batch):
            input_ids[row, : lengths[i]] = ids[i]
        mask = (np.arange(width)[None, :] < lengths[batch][:, None]).astype(np.int64)
        logits = session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs[batch] = e / e.sum(axis=1, keepdims=True)
    columns = {
        "emotion": pa.array([labels[i] for i in probs.argmax(axis=1)], pa.string()),
        "score": pa.array(probs.max(axis=1), pa.float32()),
        **{f"prob_{label}": pa.array(probs[:, j], pa.float32()) for j, label in enumerate(labels)},
    }
    for name, column in columns.items():
        table = table.append_column(name, column)
    pq.write_table(table, args.output, compression="zstd")
    done = time.perf_counter()
    print(json.dumps({
        "rows": table.num_rows,
        "export_s": export_s,  # one-off: 0 when the .onnx file was cached
        "startup_s": loaded - STARTED - export_s,  # imports + session + tokenizer
        "label_s": done - loaded,  # read + tokenize + classify + write
        "wall_s_in_process": done - STARTED - export_s,
        "began_s": began - STARTED - export_s,
    }))


if __name__ == "__main__":
    main()
