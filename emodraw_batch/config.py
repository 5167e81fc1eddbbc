"""The labelling settings (`RunConfig`): defaults, then a TOML file, then CLI flags.

The field defaults below are the one table of defaults: the CLI's help reads them
(`default`). Unknown keys are errors, so a typo in `configs/*.toml` never silently
does nothing. Where the work runs (engine, workers...) is not the package's business:
those settings live in `emodraw_flows/settings.py`, which reads the same TOML file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from emodraw_batch.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# The model shipped inside the package (inference/loading.py OFFLINE): as accurate as the hub's
# ALBERT-base emotion checkpoint on the Emotions test split, ~10x faster on a CPU, and no download,
# so the first command works on any machine (docs/training.md). The hub checkpoint is one flag away:
# --model bhadresh-savani/albert-base-v2-emotion.
DEFAULT_MODEL = "offline"
Precision = Literal["auto", "fast", "fp32", "bf16", "fp16", "int8"]
M = TypeVar("M", bound=BaseModel)


def check_device(cls: Any, value: str) -> str:
    """A pydantic validator for every `device` setting: auto, cpu, cuda or cuda:N."""
    ok = value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())
    if not ok:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {value!r}")
    return value


class RunConfig(BaseModel):
    """Everything that decides what `emodraw-batch run` computes and writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = DEFAULT_MODEL
    revision: str | None = None
    text_column: str = "text"
    id_column: str | None = None
    device: str = "auto"
    precision: Precision = "auto"
    # The forward pass: auto = ONNX Runtime for fp32 on the CPU when installed, else torch. Not in
    # the fingerprint: both give the same labels (probabilities within ~1e-6), so a job may resume on either.
    runtime: Literal["auto", "torch", "onnx"] = "auto"
    max_length: int = Field(128, ge=8)
    # Texts longer than max_length: truncate (the model sees the first max_length tokens) or chunk
    # (every window of max_length tokens, chunk_overlap shared, at most max_chunks; probabilities
    # aggregated by chunk_aggregation). See inference/chunks.py and docs/long-texts.md.
    long_texts: Literal["truncate", "chunk"] = "chunk"
    chunk_overlap: int | None = Field(None, ge=0)  # None: a quarter of the window (32 at max_length 128)
    max_chunks: int = Field(16, ge=1)
    chunk_aggregation: Literal["weighted", "mean", "max"] = "weighted"
    # Token budget of one forward pass: rows x longest row <= batch_tokens.
    # None sizes it from the device (see device.default_batch_tokens).
    batch_tokens: int | None = Field(None, ge=8)
    # Rows sorted together by length; bounds memory, never changes results.
    window_rows: int = Field(25_000, ge=1)
    # Rows per shard (one output file each); shards are whole row groups.
    shard_rows: int = Field(1_000_000, ge=1)
    allow_pickle: bool = False
    cast_text: bool = False
    # Within a shard, a repeated text goes through the model once and its copies get the same result
    # (job/dedup.py). In the fingerprint: a resumed run must not mix the two ways of labelling.
    dedup: bool = True
    # The most distinct texts a shard remembers for dedup (~50 bytes each): memory then depends on this,
    # not on the shard. A copy of a text seen within the last dedup_texts / 2 distinct ones is always
    # served; an older one runs again (same label). Not in the fingerprint: it changes no label.
    dedup_texts: int = Field(200_000, ge=2)
    skip_bad_files: bool = False
    # Statistics (see stats.py).
    group_by: tuple[str, ...] = ()
    time_column: str | None = None
    every: str = "1d"
    # Rows in a language outside this comma-separated list of ISO 639-1 codes are kept but not labelled
    # (status "language"); "any" labels every row and detects nothing. The default model is trained on English.
    languages: str = "en"
    # The input's own language column (X: lang, Mastodon: language; BCP 47, primary subtag used): where it
    # names a language it decides the row; und, empty and null rows are detected. None: detect every row.
    # A file without the column is detected too.
    language_column: str | None = "lang"
    # A detected row is skipped when its best guess is another language and fastText gives `languages`
    # together less than this probability (in its best 2 guesses): 96.6% of other-language texts skipped,
    # 0.13% of the English texts lost (3 of 2,250: the Emotions test split and the set's English; docs/run.md#languages, bench/language.py).
    language_skip_below: float = Field(0.1, ge=0.0, le=1.0)
    # The best guess's probability from which a labelled row names it (text_lang; else null: unsure), and
    # which a text under 20 characters needs as well to be skipped (a few words are easily mistaken).
    language_confidence: float = Field(0.8, ge=0.0, le=1.0)
    # Processes that detect languages beside the labelling process (fastText holds the GIL, so threads
    # cannot share the work): None = auto, none on a CPU (its model is far slower than one detecting
    # thread), one per 4 cores on a GPU, at most 8. 0 = in a thread of the labelling process. Changes no
    # result (not in the fingerprint); see inference/language_pool.py.
    language_workers: int | None = Field(None, ge=0, le=64)

    _check_device = field_validator("device")(check_device)

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: str) -> str:
        """`En, es` -> `en,es` (one spelling per setting, so the resume fingerprint compares equal)."""
        codes = sorted({c.strip().lower() for c in value.split(",") if c.strip()})
        bad = [c for c in codes if not (c.isascii() and c.isalpha() and 2 <= len(c) <= 3)]
        if not codes or bad or ("any" in codes and len(codes) > 1):
            raise ValueError(
                f"languages must be `any` or a comma-separated list of language codes such as en or en,es,fr "
                f"(ISO 639-1){f'; not codes: {bad}' if bad else ''}"
            )
        return ",".join(codes)

    @field_validator("language_column", mode="before")
    @classmethod
    def _check_language_column(cls, value: Any) -> Any:
        """`none` (any case; TOML has no null) turns the input's language column off: every row is detected."""
        if isinstance(value, str) and value.strip().lower() == "none":
            return None
        if isinstance(value, str) and not value.strip():
            raise ValueError("language_column must name an input column, or be `none` to detect every row's language")
        return value

    @property
    def detects_languages(self) -> bool:
        """Whether rows get a language (and rows outside `languages` are skipped): all but `any`."""
        return self.languages != "any"

    @field_validator("chunk_overlap")
    @classmethod
    def _check_overlap(cls, value: int | None, info: ValidationInfo) -> int | None:
        """Windows must advance by at least half their length: more overlap only multiplies the work."""
        max_length = info.data.get("max_length")
        if value is not None and max_length is not None and 2 * value > max_length:
            raise ValueError(f"chunk_overlap must be at most half of max_length ({max_length}); lower it")
        return value

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change the labels; a resumed run must match them exactly."""
        chunk = {"chunk_overlap", "max_chunks", "chunk_aggregation"} if self.long_texts == "chunk" else set()
        values = self.model_dump(
            include={"model", "revision", "text_column", "max_length", "precision", "cast_text", "dedup", "languages",
                     "long_texts", *chunk}
        )
        if self.detects_languages:  # these change nothing when nothing is detected
            values.update(
                language_confidence=self.language_confidence,
                language_skip_below=self.language_skip_below,
                language_column=self.language_column,
            )
        return values


def explain(error: ValidationError, source: str, known: Iterable[str]) -> ConfigError:
    """A pydantic ValidationError as one paragraph: each bad key, what was received, the known keys."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown key {where!r} (known keys: {', '.join(known)})")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message} (got {item.get('input')!r})")
    return ConfigError(f"Invalid configuration in {source}: " + "; ".join(lines) + ". Fix or remove these keys.")


def default(model: type[BaseModel], name: str) -> Any:
    """The default of one setting, for help texts: `default(RunConfig, "max_length")` -> 128."""
    return model.model_fields[name].default


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file; the keys may sit at the top level or under [run]."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist. Pass a TOML file such as configs/default.toml.")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid TOML: {exc}.") from None
    return dict(data.get("run", data)) if set(data) <= {"run"} else data


def build(model: type[M], values: dict[str, Any], source: str, known: Iterable[str] | None = None) -> M:
    """A settings model from `values`, or one ConfigError naming every bad key and the fix."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise explain(exc, source, known or model.model_fields) from None


def source_of(path: str | Path | None) -> str:
    return str(path) if path else "command-line flags"


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Defaults < TOML file < overrides; overrides that are None are not set."""
    values: dict[str, Any] = read_toml(path) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build(RunConfig, values, source_of(path))
