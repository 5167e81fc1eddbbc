"""The shipped configs: each loads, passes the engine checks, and means what the README says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import emodraw_flows  # noqa: F401  (Prefect defaults before Prefect is imported)
from emodraw_batch.config import RunConfig, read_toml
from emodraw_batch.errors import ConfigError
from emodraw_flows import engines, schedule
from emodraw_flows.settings import EngineConfig, load_settings

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["default.toml", "nightly.toml", "multi-gpu.toml"])
def test_each_config_loads_and_passes_the_engine_checks(name):
    path = CONFIGS / name
    keys = set(read_toml(path))
    # nothing a typo could have turned into a no-op
    assert keys and keys <= set(RunConfig.model_fields) | set(EngineConfig.model_fields)
    load_settings(path)  # includes the engine checks


def test_default_config_holds_the_defaults():
    assert load_settings(CONFIGS / "default.toml") == (RunConfig(), EngineConfig())


def test_nightly_and_multi_gpu_configs_run_on_dask():
    nightly, nightly_engine = load_settings(CONFIGS / "nightly.toml")
    assert nightly_engine.engine == "dask" and nightly.skip_bad_files
    assert nightly_engine.retries > EngineConfig().retries
    gpu, gpu_engine = load_settings(CONFIGS / "multi-gpu.toml")
    assert gpu_engine.engine == "dask" and gpu.device == "auto" and gpu.batch_tokens is None
    # On a 4-GPU machine it means one pinned worker per GPU; on CPU only it still works.
    assert engines.local_cluster(gpu_engine.workers, gpu.device, engines.Machine(64, 4, True)).workers == 4
    assert engines.local_cluster(gpu_engine.workers, gpu.device, engines.Machine(8, 0, False)).cluster_class == (
        "distributed.LocalCluster"
    )


def test_flags_override_the_file_and_unknown_keys_are_errors(tmp_path):
    assert load_settings(CONFIGS / "nightly.toml", engine="local")[1].engine == "local"
    typo = tmp_path / "typo.toml"
    typo.write_text("[run]\nengine = 'dask'\nworker = 2\n")
    with pytest.raises(ConfigError, match="unknown key 'worker'"):
        load_settings(typo)
    bad = tmp_path / "bad.toml"
    bad.write_text("engine = 'spark'\n")
    with pytest.raises(ConfigError, match="engine"):
        load_settings(bad)


def test_prefect_yaml_deployment_matches_the_flow():
    """configs/prefect.yaml: its entrypoint is the flow, its parameters bind, its schedule is valid."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((CONFIGS / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    root = CONFIGS.parent
    flow = load_flow_from_entrypoint(deployment["entrypoint"])  # the module path: the installed package
    assert flow.name == "emodraw-label"
    params = deployment["parameters"]
    flow.validate_parameters(params)  # raises on unknown or mistyped parameters
    load_settings(root / params["config_file"], **params["config"])  # includes the engine checks
    for item in deployment["schedules"]:
        schedule.check_cron(item["cron"])
        schedule.zone(item["timezone"])
    assert params["timezone"] == deployment["schedules"][0]["timezone"]
    assert "{yesterday}" in params["output"] and deployment["work_pool"]["name"]
