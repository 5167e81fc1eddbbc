"""The command line: clean one-paragraph errors, config precedence, JSON summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_texts, write_corpus

from emodraw_batch.config import load_config
from emodraw_batch.errors import ConfigError


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "emodraw_cli.app", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    message = result.stderr.strip()
    assert message.startswith("error:")
    assert "\n\n" not in message  # one paragraph
    for needle in needles:
        assert needle in message, message


def test_missing_file(tmp_path):
    result = cli("run", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "out"))
    assert_clean_error(result, "nope.parquet", "does not exist")


def test_missing_column_names_file_and_columns(tmp_path):
    good = write_corpus(tmp_path / "a.parquet", ["hello"])
    bad = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": [1], "body": ["hi"]}), bad)
    result = cli("run", str(good), str(bad), "-o", str(tmp_path / "out"))
    assert_clean_error(result, "b.parquet", "'text'", "['id', 'body']", "--text-column")


def test_wrong_type(tmp_path):
    bad = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), bad)
    result = cli("run", str(bad), "-o", str(tmp_path / "out"))
    assert_clean_error(result, "n.parquet", "int64", "--cast-text")


def test_unknown_config_key_is_an_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "x"\nbatch_tokenz = 5\n')
    with pytest.raises(ConfigError, match="batch_tokenz"):
        load_config(cfg)
    corpus = write_corpus(tmp_path / "a.parquet", ["hello"])
    assert_clean_error(cli("run", str(corpus), "-o", str(tmp_path / "out"), "--config", str(cfg)), "batch_tokenz")


def test_flags_override_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nmax_length = 64\ntext_column = "body"\n')
    loaded = load_config(cfg, max_length=32)
    assert loaded.max_length == 32 and loaded.text_column == "body"
    with pytest.raises(Exception):
        loaded.max_length = 10  # frozen


def test_run_json_summary_end_to_end(tiny_model, tmp_path, prefect_api):
    texts = make_texts(50, seed=2)
    corpus = write_corpus(tmp_path / "in.parquet", texts + [""] + [texts[3]] * 3)  # a text 4 times: 3 repeats
    result = cli("run", str(corpus), "-o", str(tmp_path / "out"), "--model", tiny_model, "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 54
    assert summary["status"] == {"ok": 53, "empty": 1}
    assert sum(summary["emotions"].values()) == 53
    assert abs(sum(summary["shares"].values()) - 1) < 1e-3
    assert summary["repeats"] == 3 + len(texts) - len(set(texts))  # served by a repeat (dedup is on by default)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["summary"]["rows"] == 54 and manifest["model"]["model"] == tiny_model
    assert manifest["summary"]["repeats"] == summary["repeats"] == manifest["outputs"][0]["repeats"]
    off = cli("run", str(corpus), "-o", str(tmp_path / "off"), "--model", tiny_model, "--json", "--device", "cpu", "--no-dedup")
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["repeats"] == 0
    assert json.loads((tmp_path / "off" / "manifest.json").read_text())["config"]["dedup"] is False


def test_help_is_light():
    # --help must not import torch or transformers (instant start-up).
    code = "import sys, emodraw_cli.app as c; print(any(m in sys.modules for m in ('torch', 'transformers', 'prefect')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
