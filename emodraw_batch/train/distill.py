"""Distil a teacher classifier into a small ALBERT student: `emodraw-batch distill`.

The teacher labels unlabelled texts with the batch path of `run` (sorted batching, streaming,
resume), keeping every class probability; the student learns those soft targets (T²·KL at a
temperature) with the epoch loop of `train` (same batching, early stopping, resume, checkpoints).

    DIR/config.json            the settings (a resumed run must match them)
    DIR/corpus.parquet         every text: row, part (train | heldout | val), text, label
    DIR/teacher/               the teacher's labels of the corpus, written by `run`
    DIR/student/               the student, a `train` output folder (best model, last/, metrics)
    DIR/eval/, DIR/bench/      the teacher's and the student's reports on --test, benchmark runs
    DIR/distill.json           teacher vs student: agreement, accuracy, macro F1, size, rows/s
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from emodraw_batch.atomic import replacing, write_json
from emodraw_batch.errors import ConfigError, OutputError
from emodraw_batch.config import build
from emodraw_batch.train.config import FitSettings, Size
from emodraw_batch.train.loop import Objective, TrainCallbacks, soften

CONFIG = "config.json"
CORPUS = "corpus.parquet"
REPORT = "distill.json"
# Teacher labelling is resumable shard by shard; shards of this many rows (whole row groups).
SHARD_ROWS = 4096
# Files of a checkpoint folder that are not the model (the size on disk counts the rest).
NOT_MODEL = {"metrics.csv", "metrics.json", CONFIG, REPORT}


class DistillConfig(FitSettings):
    """Everything that decides what `emodraw-batch distill` computes."""

    teacher: str
    texts: tuple[str, ...] = Field(min_length=1)
    student_size: Size | None = None  # a new ALBERT of this size (default mini), unless student_base is given
    student_base: str | None = None
    val: str | None = None
    test: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    # Share of the texts held out for early stopping and agreement when no --val is given.
    val_share: float = Field(0.1, gt=0, lt=1)
    temperature: float = Field(2.0, gt=0)
    # Where a validation text has a true label, this share of its loss is cross-entropy on it.
    hard_weight: float = Field(0.5, ge=0, le=1)

    FINGERPRINT: ClassVar[tuple[str, ...]] = (
        "teacher", "texts", "student_size", "student_base", "val", "text_column", "label_column", "val_share",
        "temperature", "hard_weight", *FitSettings.FINGERPRINT,
    )

    @classmethod
    def starting_point(cls, values: dict[str, Any]) -> tuple[str | None, str | None]:
        return values.get("student_base"), values.get("student_size") or "mini"

    @model_validator(mode="after")
    def _one_student(self) -> DistillConfig:
        if self.student_base is not None and self.student_size is not None:
            raise ValueError("pass --student-size (a new ALBERT) or --student-base (a pretrained one), not both")
        return self


def make_config(output: str | Path | None = None, resume: bool = False, **flags: Any) -> DistillConfig:
    """Defaults < the settings of the run being resumed (DIR/config.json) < flags that are not None."""
    values: dict[str, Any] = dict(_saved_config(Path(output))) if resume and output else {}
    values.update({k: v for k, v in flags.items() if v is not None and not (isinstance(v, (list, tuple)) and not v)})
    return build(DistillConfig, values, "the distill options")


def _saved_config(output: Path) -> dict[str, Any]:
    import json

    path = output / CONFIG
    if not path.is_file():
        raise OutputError(f"Cannot resume: {str(output)!r} holds no distill run ({CONFIG} is missing). "
                          "Drop --resume to start one, or pass the --output of the run to continue.")
    return json.loads(path.read_text())


def check_output(output: Path, cfg: DistillConfig, resume: bool, overwrite: bool) -> None:
    """Check DIR against the flags, changing nothing."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --output and --overwrite deletes it; pass one of them.")
    if resume:
        saved = DistillConfig(**_saved_config(output)).fingerprint()
        diff = [f"{k}: {saved[k]!r} -> {v!r}" for k, v in cfg.fingerprint().items() if saved[k] != v]
        if diff:
            raise OutputError(f"Cannot resume {str(output)!r} with different settings ({'; '.join(diff)}). "
                              "Resume with the original settings, or distil into a new --output.")
        return
    if output.exists() and not output.is_dir():
        raise OutputError(f"--output {str(output)!r} is a file; pass a folder (it is created if missing).")
    if output.exists() and any(output.iterdir()):
        if not (output / CONFIG).is_file():
            raise OutputError(f"--output {str(output)!r} is a non-empty folder that holds no distill run; "
                              "refusing to write into it. Pass a new or empty folder.")
        if not overwrite:
            raise OutputError(f"--output {str(output)!r} already holds a distill run. Pass --resume to continue it, "
                              "--overwrite to start again, or a new folder.")


# -- the corpus ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Corpus:
    """Every text the teacher labels, in row order, with its part and (for --val) its true label."""

    texts: list[str]
    parts: np.ndarray  # "train", "heldout" or "val"
    labels: list[str | None]

    def rows(self, part: str) -> np.ndarray:
        return np.flatnonzero(self.parts == part)

    @property
    def held(self) -> str:
        """The part that validates the student: --val if given, else the held-out texts."""
        return "val" if (self.parts == "val").any() else "heldout"


def read_corpus(cfg: DistillConfig) -> Corpus:
    """Read every --texts file (and --val); hold out cfg.val_share of the texts when there is no --val."""
    from emodraw_batch.files.labelled import read_labelled, read_texts

    texts = [t for path in cfg.texts for t in read_texts(path, cfg.text_column)[0]]
    parts = np.full(len(texts), "train", dtype=object)
    labels: list[str | None] = [None] * len(texts)
    if cfg.val is None:
        held = np.random.default_rng(cfg.seed).permutation(len(texts))[: max(1, round(cfg.val_share * len(texts)))]
        parts[held] = "heldout"
    else:
        val = read_labelled(cfg.val, cfg.text_column, cfg.label_column)
        texts, labels = texts + val.texts, labels + list(val.labels)
        parts = np.concatenate([parts, np.full(len(val), "val", dtype=object)])
    if not (parts == "train").sum():
        raise ConfigError("No texts are left to train the student on; pass more --texts or a smaller --val-share.")
    return Corpus(texts, parts, labels)


def load_corpus(path: Path) -> Corpus:
    table = pq.read_table(path).sort_by("row")
    return Corpus(table["text"].to_pylist(), np.array(table["part"].to_pylist(), dtype=object),
                  table["label"].to_pylist())


def write_corpus(corpus: Corpus, path: Path) -> None:
    table = pa.table({"row": pa.array(np.arange(len(corpus.texts)), pa.int64()),
                      "part": pa.array(corpus.parts.tolist(), pa.string()),
                      "text": pa.array(corpus.texts, pa.string()),
                      "label": pa.array(corpus.labels, pa.string())})
    with replacing(path) as temp:
        pq.write_table(table, temp, row_group_size=SHARD_ROWS)


# -- the teacher ---------------------------------------------------------------------------------

# How the teacher (and both models in `benchmark`) label: every row, each text as the student reads it.
STUDENT_VIEW = {"languages": "any", "long_texts": "truncate"}


@dataclass(frozen=True)
class TeacherLabels:
    labels: list[str]
    probs: np.ndarray  # (rows, labels) in corpus row order


def label_with_teacher(cfg: DistillConfig, output: Path, on_rows: Callable[[int], None] | None = None) -> TeacherLabels:
    """The teacher's probabilities for every corpus row, via `run` into DIR/teacher (which resumes)."""
    import json

    from emodraw_batch.config import load_config
    from emodraw_batch.inference.classifier import column_name
    from emodraw_batch.job.runner import run

    # Soft targets for every row, of the text the student sees: no row skipped for its language
    # (a skipped row has no probabilities), and long texts cut at max_length as the student's inputs are.
    config = load_config(model=cfg.teacher, id_column="row", device=cfg.device, max_length=cfg.max_length,
                         shard_rows=SHARD_ROWS, allow_pickle=cfg.allow_pickle, **STUDENT_VIEW)
    run([str(output / CORPUS)], output / "teacher", config, on_rows=on_rows)
    labels = json.loads((output / "teacher" / "manifest.json").read_text())["model"]["labels"]
    table = pq.read_table(output / "teacher" / "labels", columns=["row", *map(column_name, labels)])
    table = table.sort_by("row")
    probs = np.stack([table[column_name(label)].to_numpy() for label in labels], axis=1).astype(np.float32)
    return TeacherLabels(labels, probs)


# -- the student ---------------------------------------------------------------------------------

def student_setup(cfg: DistillConfig, corpus: Corpus, teacher: TeacherLabels, resume_from: Path | None) -> Any:
    """The `fit` Setup: the student model and the corpus with the teacher's soft targets."""
    from emodraw_batch.inference.loading import input_limits
    from emodraw_batch.train.data import Split, encode
    from emodraw_batch.train.run import Setup
    from emodraw_batch.train.start import from_base, from_folder, from_scratch

    train_rows, val_rows = corpus.rows("train"), corpus.rows(corpus.held)
    train_texts = [corpus.texts[i] for i in train_rows]
    labels = list(teacher.labels)
    if resume_from is not None:
        tokenizer, model = from_folder(resume_from, cfg.allow_pickle)
        labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    elif cfg.student_base is not None:
        tokenizer, model, labels = from_base(cfg.student_base, labels, cfg.seed, cfg.allow_pickle)
    else:
        size = cfg.student_size or "mini"
        tokenizer, model = from_scratch(train_texts, labels, size, cfg.vocab_size, cfg.max_length, cfg.seed)
    order = [teacher.labels.index(label) for label in labels]  # teacher columns in the student's label order
    soft = soften(teacher.probs[:, order], cfg.temperature)
    index = {label: i for i, label in enumerate(labels)}
    truth = np.array([index.get(str(y), -1) if y is not None else -1 for y in corpus.labels], dtype=np.int64)
    max_length, _ = input_limits(tokenizer, model.config, cfg.max_length)

    def split(rows: np.ndarray) -> Split:
        return Split(encode(tokenizer, [corpus.texts[i] for i in rows], max_length), truth[rows], soft[rows])

    return Setup(tokenizer, model, labels, split(train_rows), split(val_rows),
                 Objective(cfg.temperature, cfg.hard_weight))


def train_student(cfg: DistillConfig, output: Path, corpus: Corpus, teacher: TeacherLabels,
                  callbacks: TrainCallbacks | None = None) -> Any:
    """Train DIR/student with `train`'s loop; continues DIR/student/last when it exists."""
    from emodraw_batch.train.checkpoints import LAST, STATE
    from emodraw_batch.train.run import fit

    folder = output / "student"
    resume = (folder / LAST / STATE).is_file()
    if not resume:
        shutil.rmtree(folder, ignore_errors=True)  # at most a first epoch that never finished
    return fit(cfg, folder, lambda state: student_setup(cfg, corpus, teacher, folder / LAST if state else None),
               resume=resume, callbacks=callbacks, record={"teacher": cfg.teacher})


# -- the comparison ------------------------------------------------------------------------------

def model_size(folder: str) -> dict[str, int]:
    """Parameters, and bytes on disk of the checkpoint files (weights, config, tokenizer)."""
    from emodraw_batch.inference.loading import load_checkpoint

    _, model = load_checkpoint(folder)
    files = [p for p in Path(folder).expanduser().iterdir() if p.is_file() and p.name not in NOT_MODEL]
    return {"parameters": int(sum(p.numel() for p in model.parameters())),
            "bytes": int(sum(p.stat().st_size for p in files)),
            "weights_bytes": int(sum(p.stat().st_size for p in files if p.suffix == ".safetensors"))}


def benchmark(model: str, texts_parquet: Path, out: Path, cfg: DistillConfig) -> tuple[float, np.ndarray]:
    """Labelling rows/s with `run` (model loaded, as `run` times its shards) and the labels it gave."""
    import json

    from emodraw_batch.config import load_config
    from emodraw_batch.job.runner import run

    config = load_config(model=model, device=cfg.device, max_length=cfg.max_length, allow_pickle=cfg.allow_pickle,
                         **STUDENT_VIEW)
    summary = run([str(texts_parquet)], out, config, overwrite=True)
    seconds = sum(o["seconds"] for o in json.loads((out / "manifest.json").read_text())["outputs"])
    table = pq.read_table(out / "labels", columns=["row", "emotion"]).sort_by("row")
    return summary.rows / max(seconds, 1e-9), np.array(table["emotion"].to_pylist(), dtype=object)


def compare(cfg: DistillConfig, output: Path, corpus: Corpus, teacher: TeacherLabels) -> dict[str, Any]:
    """Agreement on the held-out texts; accuracy and macro F1 on --test; size and rows/s of both models."""
    from emodraw_batch.analysis.evaluate import evaluate
    from emodraw_batch.files.labelled import read_labelled
    from emodraw_batch.inference.classifier import EmotionClassifier

    student = str(output / "student")
    held = corpus.rows(corpus.held)
    clf = EmotionClassifier(student, device=cfg.device, max_length=cfg.max_length)
    student_labels = np.array(clf.labels)[clf([corpus.texts[i] for i in held]).probs.argmax(1)]
    teacher_labels = np.array(teacher.labels)[teacher.probs[held].argmax(1)]
    bench_texts = read_labelled(cfg.test, cfg.text_column, cfg.label_column).texts if cfg.test else \
        [corpus.texts[i] for i in held]
    bench_file = output / "bench" / "texts.parquet"
    with replacing(bench_file) as temp:
        pq.write_table(pa.table({"row": np.arange(len(bench_texts)), "text": pa.array(bench_texts, pa.string())}), temp)
    models: dict[str, dict[str, Any]] = {}
    bench_labels = {}
    for name, folder in (("teacher", cfg.teacher), ("student", student)):
        rows_per_s, bench_labels[name] = benchmark(folder, bench_file, output / "bench" / name, cfg)
        models[name] = {"model": folder, **model_size(folder), "rows_per_s": round(rows_per_s, 1)}
        if cfg.test:
            scores = evaluate(folder, cfg.test, output / "eval" / name, text_column=cfg.text_column,
                              label_column=cfg.label_column, device=cfg.device, max_length=cfg.max_length)
            models[name].update(test_accuracy=scores["accuracy"], test_macro_f1=scores["macro_f1"])
    return {
        "agreement": float(np.mean(student_labels == teacher_labels)),
        "agreement_on": corpus.held,
        "agreement_test" if cfg.test else "agreement_bench": float(np.mean(bench_labels["student"] == bench_labels["teacher"])),
        "n_texts": int(len(corpus.texts)), "n_train": int(len(corpus.rows("train"))), "n_held": int(len(held)),
        "n_bench": len(bench_texts), "teacher": models["teacher"], "student": models["student"],
        "size_ratio": models["teacher"]["bytes"] / max(models["student"]["bytes"], 1),
        "speedup": models["student"]["rows_per_s"] / max(models["teacher"]["rows_per_s"], 1e-9),
    }


def distill(cfg: DistillConfig, output: str | Path, *, resume: bool = False, overwrite: bool = False,
            callbacks: TrainCallbacks | None = None, on_rows: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Teacher labels -> student training -> comparison; every step resumes (see the module docstring)."""
    started = time.perf_counter()
    output = Path(output).expanduser()
    check_output(output, cfg, resume, overwrite)
    corpus = read_corpus(cfg)  # bad input fails here, before an earlier run is deleted
    if not resume:
        shutil.rmtree(output, ignore_errors=True)
        output.mkdir(parents=True)
    write_json(output / CONFIG, cfg.model_dump())
    if not (output / CORPUS).is_file():
        write_corpus(corpus, output / CORPUS)
    elif load_corpus(output / CORPUS).texts != corpus.texts:
        raise OutputError(f"The texts differ from those of the run in {str(output)!r} (the --texts or --val files "
                          "changed). Distil into a new --output, or pass --overwrite to start again.")
    teacher = label_with_teacher(cfg, output, on_rows)
    result = train_student(cfg, output, corpus, teacher, callbacks)
    report = compare(cfg, output, corpus, teacher)
    report.update(
        best_epoch=result.best_epoch, epochs=len(result.history), stopped_early=result.stopped_early,
        labels=teacher.labels, config=cfg.model_dump(), seconds=round(time.perf_counter() - started, 1),
        student_history=result.history,
    )
    write_json(output / REPORT, report)
    return report
