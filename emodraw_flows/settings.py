"""Where the shard tasks run (`EngineConfig`), and loading it beside the package's `RunConfig`.

One TOML file (`--config`) holds both: the engine keys below go to `EngineConfig`, every
other key to `emodraw_batch.config.RunConfig`; a key that is neither is an error. None of
these settings change the labels, so the package never sees them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from emodraw_batch.config import RunConfig, build, read_toml, source_of
from emodraw_batch.errors import ConfigError


class EngineConfig(BaseModel):
    """Where and how robustly the shard tasks run (see engines.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # local: this process, one device | dask: worker processes.
    engine: Literal["local", "dask"] = "local"
    # Dask worker processes (default: one per GPU, else cores // 4); the local engine has one.
    workers: int | None = Field(None, ge=1)
    # Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (needs engine = "dask").
    address: str | None = None
    # A shard task that fails is retried this often, after retry_delay seconds (user errors never are).
    retries: int = Field(2, ge=0)
    retry_delay: float = Field(10.0, ge=0)
    # Seconds a window of 25,000 rows may take (scaled by window_rows): with no window labelled and no
    # shard finished for that long the run fails, naming the shards (default: 300 on GPUs, 3600 on CPUs).
    stall_timeout: float | None = Field(None, gt=0)
    # Seconds a Dask cluster may have no worker at all while shards wait before the run fails.
    workerless_timeout: float = Field(60.0, gt=0)


def _problem(engine: EngineConfig) -> str | None:
    """What makes these engine settings unusable on any machine, or None."""
    if engine.engine == "local":
        if engine.address:
            return (f"--address {engine.address} was given with the local engine, which runs in this process. "
                    "Add --engine dask to run on that Dask cluster, or drop --address")
        if engine.workers not in (None, 1):
            return (f"--workers {engine.workers} needs --engine dask: the local engine labels the shards one after "
                    "another in this process on one device. Add --engine dask, or drop --workers")
        return None
    if engine.address and engine.workers is not None:
        return (f"--workers {engine.workers} cannot size an existing cluster at {engine.address}; its workers were "
                "started with `dask worker` / `dask cuda worker`. Drop --workers, or drop --address to start "
                "a local cluster")
    if engine.address and "://" not in engine.address:
        return f"--address {engine.address!r} is not a Dask scheduler address; pass one such as tcp://10.0.0.5:8786"
    return None


def check(config: RunConfig, engine: EngineConfig) -> None:
    """Reject engine settings that cannot work on any machine, before Prefect or any worker starts."""
    problem = _problem(engine)
    if problem:
        raise ConfigError(problem + ".")
    if engine.engine == "dask" and config.device.startswith("cuda:"):
        raise ConfigError(
            f"--device {config.device} cannot be used with --engine dask: each Dask GPU worker is pinned to its "
            "own GPU and sees it as its only device. Use --device auto (or cuda) with --engine dask."
        )


def load_settings(path: Any = None, **overrides: Any) -> tuple[RunConfig, EngineConfig]:
    """Defaults < TOML file < overrides (None means not set), split into the two settings objects."""
    values: dict[str, Any] = read_toml(path) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    engine_values = {k: values.pop(k) for k in list(values) if k in EngineConfig.model_fields}
    known = [*RunConfig.model_fields, *EngineConfig.model_fields]
    config = build(RunConfig, values, source_of(path), known)
    engine = build(EngineConfig, engine_values, source_of(path), known)
    check(config, engine)
    return config, engine


def as_parameters(config: RunConfig, engine: EngineConfig) -> dict[str, Any]:
    """Both settings as one flat dict of the non-default keys: the flow's `config` parameter."""
    return {**config.model_dump(mode="json", exclude_defaults=True), **engine.model_dump(mode="json", exclude_defaults=True)}
