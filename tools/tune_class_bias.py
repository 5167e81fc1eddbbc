"""Choose per-class logit offsets on labelled validation texts for macro F1, and write a checkpoint
with them folded into its classifier bias (emodraw_batch/train/class_bias.py).

    python tools/tune_class_bias.py distill/student --val emotion/val.txt --output tuned [--half]

Prints the offsets and the validation accuracy and macro F1 before and after. Use a split the
model was not trained on (the test split only for the final score: `emodraw-batch evaluate`).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a checkpoint folder (a sequence classifier with a `classifier` layer)")
    parser.add_argument("--val", required=True, help="labelled texts: Parquet, CSV or `text;label` lines")
    parser.add_argument("--output", required=True)
    parser.add_argument("--half", action="store_true", help="store the weights in fp16 (half the size on disk)")
    args = parser.parse_args()

    from emodraw_batch.analysis.metrics import report
    from emodraw_batch.files.labelled import check_known, read_labelled
    from emodraw_batch.inference.classifier import EmotionClassifier
    from emodraw_batch.inference.loading import load_checkpoint
    from emodraw_batch.train import class_bias
    from emodraw_batch.train.checkpoints import save_checkpoint

    labelled = read_labelled(args.val)
    clf = EmotionClassifier(args.model, device="cpu", runtime="torch")
    check_known(labelled, clf.labels, f"model {args.model!r}")
    y = np.array([clf.labels.index(label) for label in labelled.labels])
    log_probs = np.log(np.clip(clf(labelled.texts).probs, 1e-12, 1.0))
    offsets = class_bias.tune_offsets(log_probs, y)
    before, after = (report(y, (log_probs + o).argmax(1), clf.labels) for o in (0.0, offsets))
    print(json.dumps({
        "offsets": dict(zip(clf.labels, offsets.round(2).tolist())),
        "val_accuracy": [round(before["accuracy"], 4), round(after["accuracy"], 4)],
        "val_macro_f1": [round(before["macro_f1"], 4), round(after["macro_f1"], 4)],
    }))
    tokenizer, model = load_checkpoint(args.model)  # as stored (the classifier's copy is made ready to run)
    class_bias.fold_into_head(model, offsets)
    save_checkpoint(args.output, model, tokenizer, half=args.half)


if __name__ == "__main__":
    main()
