"""Turn a BERT checkpoint into an ALBERT one (emodraw_batch/train/from_bert.py): chosen layers,
optionally a smaller vocabulary, optionally fp16 weights on disk.

    python tools/bert_to_albert.py minilm-emotion --output albert-l4 --layers 0,2,4,5 \
        --vocab-size 11000 --vocab-texts emotion/train.txt
    python tools/bert_to_albert.py student --output shipped --half      # an ALBERT: re-save in fp16

With all layers and the full vocabulary, the ALBERT gives the BERT's logits.
An ALBERT input (from an earlier conversion, then trained) is only re-saved (--half).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a BERT checkpoint folder (BertModel or BertForSequenceClassification), or an ALBERT one")
    parser.add_argument("--output", required=True)
    parser.add_argument("--layers", help="BERT layers to keep, e.g. 0,2,4,5 (default: all)")
    parser.add_argument("--vocab-size", type=int, help="keep this many tokens (default: all)")
    parser.add_argument("--vocab-texts", type=Path, help="texts whose tokens (used at least twice) are kept first")
    parser.add_argument("--half", action="store_true", help="store the weights in fp16 (half the size on disk)")
    args = parser.parse_args()

    from emodraw_batch.files.labelled import read_texts
    from emodraw_batch.inference.loading import load_checkpoint
    from emodraw_batch.train import from_bert
    from emodraw_batch.train.checkpoints import save_checkpoint

    tokenizer, model = load_checkpoint(args.source)
    model.eval()
    if model.config.model_type == "bert":
        depth = model.config.num_hidden_layers
        layers = [int(i) for i in args.layers.split(",")] if args.layers else list(range(depth))
        model = from_bert.convert(model, layers)
        if args.vocab_size:
            seen = from_bert.frequent_tokens(tokenizer, read_texts(args.vocab_texts)[0]) if args.vocab_texts else ()
            tokenizer = from_bert.prune_vocab(model, tokenizer, args.vocab_size, seen)
    save_checkpoint(args.output, model, tokenizer, half=args.half)
    size = sum(f.stat().st_size for f in Path(args.output).iterdir() if f.is_file())
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.output}: {params:,} parameters, {size / 1e6:.1f} MB on disk")


if __name__ == "__main__":
    main()
