"""Check a run before anything happens: inputs, columns, types, options, the output folder.

`validate` reads Parquet footers (and the output folder's run.json) and writes nothing,
so the CLI calls it to fail in a second, before Prefect or the model starts; the flow
calls it again because a scheduled run has no CLI in front of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyarrow.fs import FileType

from emodraw_batch.files import lock
from emodraw_batch.job import resume
from emodraw_batch.analysis import stats
from emodraw_batch.config import RunConfig
from emodraw_batch.errors import OutputError
from emodraw_batch.files.layout import Layout, layout
from emodraw_batch.files.reader import Inputs, Shard, check_language_column, check_language_column_found, plan_shards, scan
from emodraw_batch.files.storage import is_uri


@dataclass(frozen=True)
class Job:
    """A checked run, nothing written yet: inputs, output folder, settings and the shards to write."""

    specs: tuple[str, ...]  # as given (files, folders, globs): what a flow run is started with
    inputs: Inputs
    out: Layout
    config: RunConfig
    shards: list[Shard]
    record: dict[str, Any]  # what resume compares (resume.job_record)
    resolved: RunConfig  # `config` with precision and runtime resolved once, here: what every shard runs (`resolve`)
    overwrite: bool = False
    advice: str | None = None  # why the chosen precision is slow on this machine, and what to use instead

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @cached_property
    def finished(self) -> frozenset[str]:
        """The shards an earlier run of this job had written completely when first asked (read-only).

        Asked several times before the run starts (the progress bar, the flow's decision to load
        the model early, the head start): the shard footers are read once.
        """
        if self.overwrite:
            return frozenset()
        fingerprint = self.record["fingerprint"]
        return frozenset(s.name for s in self.shards if resume.complete(self.out, s, fingerprint))

    @property
    def finished_rows(self) -> int:
        return sum(s.rows for s in self.shards if s.name in self.finished)


def resolve(config: RunConfig) -> tuple[RunConfig, str | None]:
    """`config` with precision and runtime resolved on this machine, once for the whole run; and advice.

    Every shard task gets these resolved values and never resolves them again, so that one run's
    shards share one precision and runtime on a cluster that mixes GPU and CPU workers (where
    `auto` means bf16 on some and fp32 on others), and a retry on another worker cannot flip them.
    Refuses a device, precision or runtime that cannot run here. Cheap, before any model loads:
    device auto resolves without torch on a Linux machine with no GPU device node. The advice
    against a slow precision (e.g. bf16 on a CPU without bf16 units) is returned, not warned,
    so that the caller says it once. The device is not resolved for the workers: each runs on its own.
    """
    import warnings

    from emodraw_batch.inference import language
    from emodraw_batch.inference.backends import onnx_forward
    from emodraw_batch.inference.device import (
        PrecisionWarning,
        half_precision_advice,
        resolve_device,
        resolve_precision,
    )

    device = resolve_device(config.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        precision = resolve_precision(config.precision, device)
    runtime = onnx_forward.resolve_runtime(config.runtime, device, precision)
    if config.detects_languages:
        language.check_available()
    resolved = config.model_copy(update={"precision": precision, "runtime": runtime})
    return resolved, half_precision_advice(precision, device)


def check_model(config: RunConfig) -> str | None:
    """Refuse a device, precision, runtime or language detection that cannot run here; return advice against a slow precision."""
    return resolve(config)[1]


def _check_output_dir(out: Layout, inputs: Inputs) -> None:
    if out.remote:
        _check_store(out)
        inside = [f.path for f in inputs.files if f.path.rstrip("/") == out.uri.rstrip("/") or f.path.startswith(out.uri.rstrip("/") + "/")]
    else:
        root = Path(out.root)
        if root.exists() and not root.is_dir():
            raise OutputError(f"Output {out.uri!r} is a file; pass a folder with --output DIR.")
        inside = [
            f.path for f in inputs.files
            if not is_uri(f.path) and (Path(f.path).absolute() == root or root in Path(f.path).absolute().parents)
        ]
    if inside:
        raise OutputError(
            f"Input file {inside[0]!r} lies inside the output folder {out.uri!r}; outputs would mix with "
            "inputs. Choose an output folder outside the input folders."
        )


def _check_store(out: Layout) -> None:
    """The bucket of a remote output exists and answers, and the output is not one object (reads only)."""
    bucket = out.root.split("/", 1)[0]
    fix = (
        "Check the bucket name; credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_REGION), and an S3-compatible server's address from AWS_ENDPOINT_URL."
    )
    try:
        found = out.info(bucket).type
        kind = out.info(out.root).type if out.root != bucket else found
    except OSError as exc:
        raise OutputError(f"Cannot reach the output {out.uri!r} ({str(exc).splitlines()[0]}). {fix}") from None
    if found != FileType.Directory:
        raise OutputError(f"The bucket {bucket!r} of the output {out.uri!r} does not exist. Create it first. {fix}")
    if kind == FileType.File:
        raise OutputError(f"Output {out.uri!r} is an object, not a prefix; pass a folder with --output s3://BUCKET/PREFIX.")


def validate(specs: Sequence[str], out_dir: str | Path | Layout, config: RunConfig, overwrite: bool = False) -> Job:
    """Every check a run makes before it starts (before any model loads); writes nothing."""
    resolved, advice = resolve(config)
    inputs = scan(
        specs,
        config.text_column,
        id_column=config.id_column,
        cast_text=config.cast_text,
        skip_bad_files=config.skip_bad_files,
    )
    out = layout(out_dir)
    _check_output_dir(out, inputs)
    if config.detects_languages:
        for f in inputs.files:
            check_language_column(f"File {f.path!r}", f.schema, config.language_column)
        check_language_column_found([f.path for f in inputs.files], [f.schema.names for f in inputs.files],
                                    config.language_column)
    # --group-by text_lang works when the labels will have it (and the input has no column of that name)
    schema = inputs.schema
    if config.detects_languages and "text_lang" not in schema.names:
        schema = schema.append(pa.field("text_lang", pa.string()))
    stats.check_options(schema, config.group_by, config.time_column, config.every)
    shards = plan_shards(inputs, config.shard_rows)
    record = resume.job_record(inputs, resolved, shards)
    resume.check(out, record, overwrite)
    lock.check(out)
    return Job(tuple(specs), inputs, out, config, shards, record, resolved, overwrite, advice)
