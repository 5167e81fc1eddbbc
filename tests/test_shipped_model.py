"""The checkpoint shipped in data/ loads through the normal path and labels plain sentences right."""

from __future__ import annotations

from pathlib import Path

from emodraw_batch.inference.classifier import EmotionClassifier

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "albert-emotion"


def test_shipped_checkpoint_labels_obvious_sentences():
    clf = EmotionClassifier(str(SHIPPED), device="cpu")
    assert clf.labels == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    sentences = {
        "i feel so happy and cheerful today": "joy",
        "i feel really sad and lonely": "sadness",
        "i am furious and angry at them": "anger",
        "i feel scared and afraid of the dark": "fear",
        "i feel so loved and cared for": "love",
        "i was amazed and shocked by the news": "surprise",
    }
    probs = clf(list(sentences)).probs
    assert [clf.labels[i] for i in probs.argmax(1)] == list(sentences.values())


def test_offline_names_the_packaged_model_with_a_revision_of_its_weights():
    from emodraw_batch.inference.loading import packaged_model, resolve_model

    folder, revision = resolve_model("offline")
    assert Path(folder) == packaged_model() and (packaged_model() / "model.safetensors").is_file()
    assert revision.startswith("sha256:") and len(revision) == len("sha256:") + 16
    assert resolve_model("some/hub-id") == ("some/hub-id", None)
    clf = EmotionClassifier("offline", device="cpu")
    assert clf.describe()["model"] == "offline" and clf.describe()["revision"] == revision


def test_an_installed_wheel_labels_with_model_offline(tmp_path):
    """Built as a wheel and installed (not editable), outside the checkout: `--model offline` works."""
    import json
    import os
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(__file__).resolve().parents[1]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(root)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("emodraw_batch-*.whl"))
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                                str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    assert (site / "emodraw_batch" / "models" / "albert-emotion" / "model.safetensors").is_file()
    corpus = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["i feel so happy and cheerful today", "i feel really sad and lonely"]}), corpus)
    # The installed copy first on the path, the checkout nowhere: run from a folder outside it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    code = ("import sys, emodraw_batch; assert emodraw_batch.__file__.startswith(sys.argv[1]), emodraw_batch.__file__\n"
            "from emodraw_cli.app import main; sys.argv = ['emodraw-batch', *sys.argv[2:]]; main()")
    run = subprocess.run([sys.executable, "-c", code, str(site), "run", str(corpus), "-o", str(tmp_path / "out"),
                          "--model", "offline", "--device", "cpu", "--json", "--no-progress"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["emotions"] == {"joy": 1, "sadness": 1}
    model = json.loads((tmp_path / "out" / "manifest.json").read_text())["model"]
    assert model["model"] == "offline" and model["revision"].startswith("sha256:")


def test_an_unreachable_hub_names_the_offline_model(monkeypatch):
    import pytest

    from emodraw_batch.errors import ModelError
    from emodraw_batch.inference import loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "_in_cache", lambda name, revision: False)
    with pytest.raises(ModelError) as caught:
        loading.load_checkpoint("someone/not-cached-anywhere")
    message = str(caught.value)
    assert "hub cannot be reached" in message and "--model offline" in message and "--model DIR" in message
