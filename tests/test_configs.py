"""The shipped configs: each loads, passes the engine checks, and means what the README says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import flows  # noqa: F401  (Prefect defaults before Prefect is imported)
from emodraw_batch.config import RunConfig, load_config, read_toml
from emodraw_batch.errors import ConfigError
from flows import engines, schedule

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["default.toml", "nightly.toml", "multi-gpu.toml"])
def test_each_config_loads_and_passes_the_engine_checks(name):
    path = CONFIGS / name
    keys = set(read_toml(path))
    assert keys and keys <= set(RunConfig.model_fields)  # nothing a typo could have turned into a no-op
    engines.check(load_config(path))


def test_default_config_holds_the_defaults():
    assert load_config(CONFIGS / "default.toml") == RunConfig()


def test_nightly_and_multi_gpu_configs_run_on_dask():
    nightly = load_config(CONFIGS / "nightly.toml")
    assert nightly.engine == "dask" and nightly.skip_bad_files and nightly.retries > RunConfig().retries
    gpu = load_config(CONFIGS / "multi-gpu.toml")
    assert gpu.engine == "dask" and gpu.device == "auto" and gpu.batch_tokens is None
    # On a 4-GPU machine it means one pinned worker per GPU; on CPU only it still works.
    assert engines.local_cluster(gpu.workers, gpu.device, engines.Machine(64, 4, True)).workers == 4
    assert engines.local_cluster(gpu.workers, gpu.device, engines.Machine(8, 0, False)).cluster_class == (
        "distributed.LocalCluster"
    )


def test_flags_override_the_file_and_unknown_keys_are_errors(tmp_path):
    assert load_config(CONFIGS / "nightly.toml", engine="local").engine == "local"
    typo = tmp_path / "typo.toml"
    typo.write_text("[run]\nengine = 'dask'\nworker = 2\n")
    with pytest.raises(ConfigError, match="unknown key 'worker'"):
        load_config(typo)
    bad = tmp_path / "bad.toml"
    bad.write_text("engine = 'spark'\n")
    with pytest.raises(ConfigError, match="engine"):
        load_config(bad)


def test_prefect_yaml_deployment_matches_the_flow():
    """configs/prefect.yaml: its entrypoint is the flow, its parameters bind, its schedule is valid."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((CONFIGS / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    root = CONFIGS.parent
    path, name = deployment["entrypoint"].split(":")
    flow = load_flow_from_entrypoint(f"{root / path}:{name}")
    assert flow.name == "emodraw-label"
    params = deployment["parameters"]
    flow.validate_parameters(params)  # raises on unknown or mistyped parameters
    config = load_config(root / params["config_file"], **params["config"])
    engines.check(config)
    for item in deployment["schedules"]:
        schedule.check_cron(item["cron"])
        schedule.zone(item["timezone"])
    assert params["timezone"] == deployment["schedules"][0]["timezone"]
    assert "{yesterday}" in params["output"] and deployment["work_pool"]["name"]
