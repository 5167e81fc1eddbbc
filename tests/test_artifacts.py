"""Prefect artifacts of a run (issue #25, part 1), read back from a real Prefect server."""

from __future__ import annotations

import json

import pytest
from conftest import make_texts, write_corpus
from typer.testing import CliRunner

from emodraw_cli.app import app
from emodraw_flows import artifacts

cli = CliRunner()


def read_artifacts(key: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_keys_are_stable_per_deployment_and_valid_for_prefect():
    assert artifacts.key_base("nightly-tweets", "s3://b/out/2026-11-27") == "emodraw-nightly-tweets"
    assert artifacts.key_base(None, "/data/Out Folder/x") == "emodraw-out-data-out-folder-x"
    assert len(artifacts.key_base(None, "/x" * 200)) <= 100


def test_a_run_publishes_its_table_and_paragraph(prefect_api, tiny_model, tmp_path):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(50, seed=2) + [""])
    out = tmp_path / "out"
    result = cli.invoke(app, ["run", str(corpus), "-o", str(out), "--model", tiny_model, "--device", "cpu", "--json",
                              "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    base = artifacts.key_base(None, summary["output_dir"])
    (table,) = read_artifacts(f"{base}-emotions")
    rows = {r["what"]: r for r in json.loads(table.data)}
    assert {k[len("emotion: "):]: r["value"] for k, r in rows.items() if k.startswith("emotion: ")} == summary["emotions"]
    assert rows["status: empty"]["value"] == 1 and rows["rows"]["value"] == 51
    (markdown,) = read_artifacts(f"{base}-summary")
    assert "**51 rows**" in markdown.data and str(out) in markdown.data and "fp32" in markdown.data
    # The same folder again (nothing left to label): a second version under the same keys, its history.
    again = cli.invoke(app, ["run", str(corpus), "-o", str(out), "--model", tiny_model, "--device", "cpu", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert len(read_artifacts(f"{base}-summary")) == 2


def test_an_artifact_failure_never_fails_the_run(prefect_api, tiny_model, tmp_path, monkeypatch):
    import prefect.artifacts

    def broken(*args, **kwargs):
        raise RuntimeError("artifact API down")

    monkeypatch.setattr(prefect.artifacts, "create_table_artifact", broken)
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(20, seed=3))
    result = cli.invoke(app, ["run", str(corpus), "-o", str(tmp_path / "out"), "--model", tiny_model, "--device", "cpu",
                              "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["rows"] == 20
    assert "Could not publish the run's artifacts" in result.stderr and "artifact API down" in result.stderr
