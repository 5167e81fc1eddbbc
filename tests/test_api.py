"""The Python API (docs/python-api.md): `classify` in memory, `run` without an orchestrator, the flow as a subflow.

Each is compared with `emodraw-batch run` on the same texts: the same columns in the same order,
the same statuses, the same labels and probabilities (within 1e-5), the same errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import emodraw_batch
import emodraw_flows  # noqa: F401  (Prefect defaults before Prefect is imported)
from conftest import assert_same_labels, labels, make_texts, write_corpus
from emodraw_batch import ClassifySettings, RunConfig, RunSettings, Summary, classify, run
from emodraw_batch.errors import ConfigError, InputError, OutputError
from emodraw_cli.app import app

cli = CliRunner()
ROWS = 150
SPECIAL = {3: None, 7: "", 11: " \t\u200b "}  # null, empty, blank (whitespace and a zero-width space)
SETTINGS = {"device": "cpu", "shard_rows": 50, "window_rows": 50}


def same(a: pa.Table, b: pa.Table) -> None:
    """The same columns in the same order, equal values; float columns within 1e-5."""
    assert a.schema.names == b.schema.names and a.num_rows == b.num_rows
    for name in a.schema.names:
        x, y = a[name], b[name]
        if pa.types.is_floating(x.type):
            x = x.to_numpy(zero_copy_only=False).astype(np.float64)
            y = y.to_numpy(zero_copy_only=False).astype(np.float64)
            np.testing.assert_allclose(x, y, atol=1e-5, equal_nan=True, err_msg=name)
        else:
            assert x.to_pylist() == y.to_pylist(), name


@pytest.fixture(scope="module")
def texts() -> list[str | None]:
    texts: list[str | None] = list(make_texts(ROWS, seed=31, max_words=90))  # some longer than the model's 64 positions
    for i, text in SPECIAL.items():
        texts[i] = text
    return texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, texts) -> Path:
    """One file of 150 rows (id, text) in row groups of 50: three shards with shard_rows=50."""
    return write_corpus(tmp_path_factory.mktemp("api-corpus") / "in.parquet", texts, row_group_size=50)


def cli_run(*args: str):
    return cli.invoke(app, ["run", *args, "--no-progress"])


@pytest.fixture(scope="module")
def cli_out(prefect_api, corpus, tiny_model, tmp_path_factory) -> tuple[Path, dict]:
    """`emodraw-batch run` on the corpus: the output every API call is compared with, and its JSON summary."""
    from emodraw_batch.inference.classifier import clear_cache

    clear_cache()  # so that the loads counted below are this module's
    out = tmp_path_factory.mktemp("api-cli") / "out"
    result = cli_run(str(corpus), "--output", str(out), "--model", tiny_model, "--device", "cpu",
                     "--shard-rows", "50", "--window-rows", "50", "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- classify, in memory


def test_classify_a_dataframe_a_series_and_a_list_as_the_cli_labels_them(cli_out, corpus, texts, tiny_model):
    from emodraw_batch.inference.classifier import load_count
    from emodraw_batch.job.runner import classifier_for, classifier_settings

    expected = labels(cli_out[0])
    frame = classify(pl.read_parquet(corpus), model=tiny_model, device="cpu")
    assert isinstance(frame, pl.DataFrame)
    assert_same_labels(frame.to_arrow(), expected)
    same(frame.to_arrow(), expected)  # every column, in the run's order

    without_id = expected.drop_columns(["id"])
    from_list = classify(texts, model=tiny_model, device="cpu")
    same(from_list.to_arrow(), without_id)
    # A Series becomes the text column whatever its name; small windows change nothing.
    from_series = classify(pl.Series("review", texts), model=tiny_model, device="cpu", window_rows=40)
    same(from_series.to_arrow(), without_id)
    same(classify(pq.read_table(corpus), model=tiny_model, device="cpu").to_arrow(), expected)

    statuses = from_list["status"].to_list()
    assert [statuses[i] for i in SPECIAL] == ["null", "empty", "blank"]
    assert from_list["emotion"][3] is None and from_list["n_tokens"][7] == 0
    # texts longer than the model's 64 positions are chunked (the default), none past --max-chunks
    assert statuses.count("ok") == ROWS - len(SPECIAL) and from_list["n_chunks"].max() > 1
    assert not from_list["truncated"].any()
    assert from_list.columns[-6:] == ["n_tokens", "truncated", "status", "text_lang", "text_lang_score", "text_lang_source"]
    # The model the CLI's run loaded in this process, reused: loaded once for the run and every classify.
    config = RunConfig(model=tiny_model, device="cpu", shard_rows=50, window_rows=50)
    assert load_count(**classifier_settings(config)) == 1
    # And against the classifier called directly (not through the shared labelling loop).
    clf = classifier_for(config)
    ok = from_list.filter(pl.col("status") == "ok")
    direct = clf(ok["text"].to_list())
    np.testing.assert_allclose(ok.select(clf.columns).to_numpy(), direct.probs, atol=1e-5)
    assert ok["n_tokens"].to_list() == direct.n_tokens.tolist()
    assert ok["emotion"].to_list() == [clf.labels[i] for i in direct.probs.argmax(axis=1)]


def test_classify_takes_empty_input_and_keeps_other_columns_as_they_are(cli_out, tiny_model):
    empty = classify([], model=tiny_model, device="cpu")
    assert empty.height == 0 and empty.columns == labels(cli_out[0]).drop_columns(["id"]).schema.names
    # An X export's own `lang` column is kept, and decides the row's language (tests/test_language.py).
    frame = pl.DataFrame({"country": ["uk", "uk"], "body": ["so happy today", None], "day": [1, 2], "lang": ["en", "en"]})
    out = classify(frame, model=tiny_model, device="cpu", text_column="body")
    assert out.columns[:4] == ["country", "body", "day", "lang"] and out["day"].to_list() == [1, 2]
    assert out["status"].to_list() == ["ok", "null"] and out["text_lang_source"].to_list() == ["input", None]
    # A group_by on the result, as in the docs.
    shares = out.filter(pl.col("status") == "ok").group_by("text_lang").agg(pl.col("emotion").value_counts())
    assert shares.height == 1


def final_error(output: str) -> str:
    assert "error:" in output, output
    return " ".join(output[output.rindex("error:") + len("error:") :].split())


def test_a_missing_text_column_is_the_clis_error(prefect_api, corpus, tiny_model, tmp_path):
    result = cli_run(str(corpus), "--output", str(tmp_path / "out"), "--model", tiny_model, "--text-column", "body")
    assert result.exit_code == 1
    cli_message = final_error(result.output)
    with pytest.raises(InputError) as caught:
        classify(pl.read_parquet(corpus), model=tiny_model, text_column="body")
    rule = "has no text column 'body'; its columns are ['id', 'text']. Pass the right one with"
    assert rule in cli_message and rule in str(caught.value)
    assert cli_message.endswith("--text-column NAME.") and str(caught.value).endswith("text_column=NAME.")
    # The other checks of the run's validation, in the same words.
    with pytest.raises(InputError, match="must be a string type. Pass cast_text=True"):
        classify(pl.DataFrame({"text": [1, 2]}), model=tiny_model)
    with pytest.raises(InputError, match="language column must hold language codes as strings"):
        classify(pl.DataFrame({"text": ["a"], "lang": [1]}), model=tiny_model)
    with pytest.raises(InputError, match="item 1 is int"):
        classify(["fine", 3], model=tiny_model)
    with pytest.raises(InputError, match="got str"):
        classify("one text", model=tiny_model)


def test_unknown_settings_are_one_paragraph_naming_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError) as caught:
        classify(["a"], modle="x")
    message = str(caught.value)
    assert "unknown setting(s) 'modle' (did you mean 'model'?)" in message and "\n" not in message
    assert "max_length, batch_tokens, window_rows" in message and "shard_rows" not in message  # not a classify setting
    with pytest.raises(ConfigError, match=r"'shard_row' \(did you mean 'shard_rows'\?\)\. Its settings are: model, "):
        run("in.parquet", tmp_path / "out", shard_row=10)
    with pytest.raises(ConfigError, match="max_length: Input should be greater than or equal to 8"):
        run("in.parquet", tmp_path / "out", max_length=2)
    assert not (tmp_path / "out").exists()


def test_the_settings_types_name_runconfigs_fields():
    assert set(RunSettings.__annotations__) == set(RunConfig.model_fields)
    assert set(ClassifySettings.__annotations__) <= set(RunConfig.model_fields)


# ---------------------------------------------------------------- run, without an orchestrator


def test_run_writes_what_the_cli_writes(cli_out, corpus, tiny_model, tmp_path):
    cli_dir, cli_summary = cli_out
    out = tmp_path / "out"
    summary = run(str(corpus), out, model=tiny_model, **SETTINGS)
    assert isinstance(summary, Summary) and summary.rows == ROWS and summary.outputs == 3
    assert summary.output_files == [str(p) for p in sorted((out / "labels").glob("*.parquet"))]
    assert pl.read_parquet(summary.output_files).height == ROWS
    assert_same_labels(labels(out), labels(cli_dir))
    same(labels(out), labels(cli_dir))

    timing = {"seconds", "rows_per_s", "output_dir", "output_files"}
    mine = {k: v for k, v in summary.to_dict().items() if k not in timing}
    assert mine == {k: v for k, v in cli_summary.items() if k not in timing | {"workers"}}
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (out, cli_dir))
    assert a.keys() == b.keys()
    for key in ("inputs", "config", "fingerprint", "model", "stats", "skipped_files"):
        assert a[key] == b[key], key
    assert [{**o, "seconds": 0} for o in a["outputs"]] == [{**o, "seconds": 0} for o in b["outputs"]]
    assert a["engine"]["engine"] == b["engine"]["engine"] == "local"
    stats = sorted(p.name for p in (out / "stats").iterdir())
    assert stats == sorted(p.name for p in (cli_dir / "stats").iterdir())
    for name in stats:
        if name.endswith(".parquet"):
            assert pl.read_parquet(out / "stats" / name).equals(pl.read_parquet(cli_dir / "stats" / name)), name
    assert json.loads((out / "stats/summary.json").read_text()) == json.loads((cli_dir / "stats/summary.json").read_text())


class Stop(KeyboardInterrupt):
    """A user pressing stop in a notebook, part-way through the second shard."""


def test_run_resumes_after_an_interruption(cli_out, corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    calls = []

    def stop_in_the_second_shard(rows: int) -> None:
        calls.append(rows)
        if sum(calls) > 50:  # in the second shard (chunk mode may cut a shard's window of long texts in two)
            raise Stop

    with pytest.raises(Stop):
        run([corpus], out, model=tiny_model, on_rows=stop_in_the_second_shard, **SETTINGS)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "labels").glob("*.parquet")}
    assert list(first) == ["part-00000-00000.parquet"] and not (out / "manifest.json").exists()

    summary = run([corpus], out, model=tiny_model, **SETTINGS)
    assert summary.resumed == 1 and summary.rows == ROWS and summary.outputs == 3
    assert (out / "labels" / "part-00000-00000.parquet").stat().st_mtime_ns == first["part-00000-00000.parquet"]
    assert not [p for p in (out / "labels").iterdir() if p.name.startswith(".")]  # no temporary file left
    assert_same_labels(labels(out), labels(cli_out[0]))


HOLD = """
import sys
from emodraw_batch.files.layout import layout
from emodraw_batch.files.lock import held
with held(layout(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def test_run_refuses_a_locked_folder(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=rf"being written by another run \(pid {holder.pid} on "):
            run(str(corpus), out, model=tiny_model, **SETTINGS)
        assert not (out / "labels").exists() and not (out / "run.json").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


# ---------------------------------------------------------------- the flow inside a user's Prefect flow


def test_a_parent_prefect_flow_runs_the_labelling_flow_as_a_subflow(prefect_api, cli_out, corpus, tiny_model, tmp_path):
    from prefect import flow, get_client

    from emodraw_flows import label_corpus

    @flow(name="api-test-parent")
    def parent(folder: str, output: str, model: str) -> dict:
        summary = label_corpus([folder], output, config={"model": model, **SETTINGS})
        return {"labelled": summary["rows"], "summary": summary}

    out = tmp_path / "out"
    result = parent(str(corpus.parent), str(out), tiny_model)
    assert result["labelled"] == ROWS and result["summary"]["outputs"] == 3
    assert_same_labels(labels(out), labels(cli_out[0]))

    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["emodraw-label"])))
        child = next(r for r in runs if r.parameters.get("output") == str(out))
        assert child.state.is_completed() and child.parent_task_run_id is not None
        parent_run = client.read_flow_run(client.read_task_run(child.parent_task_run_id).flow_run_id)
        assert client.read_flow(parent_run.flow_id).name == "api-test-parent"
    assert parent_run.state.is_completed()


USER_FLOWS = {  # a Prefect project as users lay one out: its own `flows` package
    "flows/__init__.py": "from flows.ingest import fetch\n",
    "flows/ingest.py": "def fetch(day: str) -> str:\n    return day\n",
}


@pytest.mark.timeout(300)
def test_the_documented_subflow_runs_in_a_project_that_has_its_own_flows_package(prefect_api, tiny_model, tmp_path):
    """docs/python-api.md's example, run as a script from a project whose `flows/` package shadows any other."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "python-api.md").read_text()
    example = next(b for b in doc.split("```python\n")[1:] if "def nightly" in b).split("```")[0]
    day = "2026-12-05"
    write_corpus(tmp_path / "project" / "tweets" / day / "a.parquet", make_texts(300, seed=11), row_group_size=100)
    code = (example.replace('f"s3://tweets/{day}/*.parquet"', 'f"tweets/{day}/*.parquet"')
            .replace('f"s3://tweets-labelled/{day}"', 'f"labelled/{day}"').replace("/models/albert-emotion", tiny_model))
    assert code.count("s3://") == 0 and tiny_model in code  # the paths of the example, made local
    project = tmp_path / "project"
    for name, text in USER_FLOWS.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    assert f'nightly("{day}")' in code  # the example's own `__main__` block runs that day
    (project / "main.py").write_text("from flows import fetch  # the project's own package\n" + code)
    done = subprocess.run([sys.executable, "main.py"], cwd=project, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sum(pq.read_metadata(f).num_rows for f in (project / "labelled" / day / "labels").glob("*.parquet")) == 300


# ---------------------------------------------------------------- the package stays light


def test_import_emodraw_batch_loads_no_heavy_library():
    code = ("import sys, emodraw_batch; heavy = ('torch', 'transformers', 'prefect', 'polars'); "
            "print([m for m in sys.modules if m.split('.')[0] in heavy])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_every_public_name_resolves_and_is_documented():
    for name in emodraw_batch.__all__:
        value = getattr(emodraw_batch, name)
        if name != "__version__":
            assert value.__doc__, name
    assert set(emodraw_batch.__all__) <= set(dir(emodraw_batch))
    assert emodraw_flows.__all__ == ["label_corpus"] and emodraw_flows.label_corpus.__doc__


def test_the_version_lives_in_a_base_module_equal_to_the_installed_one():
    """Modules read the version from emodraw_batch.version (no import of the package root, test_layers.py)."""
    from importlib.metadata import version

    from emodraw_batch.version import __version__

    assert emodraw_batch.__version__ == __version__ == version("emodraw-batch")
