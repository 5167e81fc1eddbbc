"""What a training run computes: TrainConfig, with defaults that depend on the starting point."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emodraw_batch.config import check_device
from emodraw_batch.train.defaults import TUNED, defaults_for

Size = Literal["tiny", "mini", "small", "base"]


class FitSettings(BaseModel):
    """The settings of the epoch loop that every trainer shares (`train` and `distill`).

    The TUNED ones left unset take the default of the starting point (defaults.DEFAULTS), and
    the resolved values are what a run records and what a resumed run must match.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(ge=1)
    # Early stopping: stop after this many epochs without a lower validation loss.
    patience: int = Field(ge=1)
    lr: float = Field(gt=0)
    batch_size: int = Field(ge=1)
    max_length: int = Field(128, ge=8)
    seed: int = 42
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    warmup_ratio: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    # Only for a model trained from scratch: size of the tokenizer vocabulary trained on the texts.
    vocab_size: int = Field(ge=100)
    allow_pickle: bool = False

    _check_device = field_validator("device")(check_device)

    @classmethod
    def starting_point(cls, values: dict[str, Any]) -> tuple[str | None, str | None]:
        """(base checkpoint, from-scratch size) of these raw values; they pick the defaults."""
        raise NotImplementedError

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        defaults = defaults_for(*cls.starting_point(values))
        return {**values, **{k: defaults[k] for k in TUNED if values.get(k) is None}}

    # What a resumed run must share; epochs, patience, device and paths may change.
    FINGERPRINT: ClassVar[tuple[str, ...]] = ("lr", "batch_size", "max_length", "seed", "warmup_ratio", "weight_decay", "vocab_size")

    def fingerprint(self) -> dict[str, Any]:
        return self.model_dump(include=set(self.FINGERPRINT))


class TrainConfig(FitSettings):
    """Everything that decides what `emodraw-batch train` computes."""

    train: str
    val: str
    base: str | None = None
    from_scratch: Size | None = None
    text_column: str = "text"
    label_column: str = "label"

    FINGERPRINT: ClassVar[tuple[str, ...]] = ("base", "from_scratch", "text_column", "label_column", *FitSettings.FINGERPRINT)

    @classmethod
    def starting_point(cls, values: dict[str, Any]) -> tuple[str | None, str | None]:
        return values.get("base"), values.get("from_scratch")

    @model_validator(mode="after")
    def _one_start(self) -> TrainConfig:
        if (self.base is None) == (self.from_scratch is None):
            raise ValueError(
                "pass exactly one of --base CHECKPOINT (hub id or folder) or --from-scratch tiny|mini|small|base "
                f"(got base={self.base!r}, from_scratch={self.from_scratch!r})"
            )
        return self
