"""`--precision fast` and the bf16 trap on CPUs without native bf16 (issue #14).

The CPU kind is mocked through its /proc/cpuinfo flags, so both kinds seen in this project
(AVX512-BF16 and AVX2-only) are tested on whichever machine runs the tests. No timings here:
the speed claims live in bench/CPU.md with the commands that measured them.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest

from emodraw_batch.inference import device as device_mod
from emodraw_batch.inference import classifier as model_mod
from emodraw_batch.config import RunConfig
from emodraw_batch.inference.device import PrecisionWarning, half_precision_advice, resolve_precision
from emodraw_batch.errors import ConfigError
from emodraw_batch.inference.classifier import EmotionClassifier

SHIPPED = str(Path(__file__).resolve().parents[1] / "data" / "albert-emotion")
BF16_CPU = "flags : fpu sse avx2 avx512f avx512_vnni avx512_bf16"  # this project's AMD EPYC
AVX2_CPU = "flags : fpu sse sse4_2 avx avx2 fma"  # the other kind seen: no AVX-512, no bf16
AMX_CPU = "flags : fpu avx2 avx512f amx_tile amx_bf16 amx_int8"
MIN_AGREEMENT = 0.99


@pytest.fixture
def cpu(monkeypatch):
    """Pretend the CPU has the given /proc/cpuinfo flags (for code that reads them itself)."""

    def use(cpuinfo: str) -> None:
        monkeypatch.setattr(device_mod, "cpu_flags", lambda _=None: set(cpuinfo.split()))

    return use


def test_fast_is_bf16_where_native_else_fp32_never_int8():
    assert resolve_precision("fast", "cpu", BF16_CPU) == "bf16"
    assert resolve_precision("fast", "cpu", AMX_CPU) == "bf16"
    assert resolve_precision("fast", "cpu", AVX2_CPU) == "fp32"  # int8 keeps < 99% of the shipped model's labels
    assert resolve_precision("int8", "cpu", AVX2_CPU) == "int8"  # still there, by name


def test_fast_is_bf16_on_cuda_whatever_the_cpu():
    for cpuinfo in (BF16_CPU, AVX2_CPU, ""):
        assert resolve_precision("fast", "cuda", cpuinfo) == "bf16"
        assert resolve_precision("fast", "cuda:1", cpuinfo) == "bf16"


def test_fast_is_a_valid_setting_and_other_rules_hold():
    assert RunConfig(precision="fast").precision == "fast"
    assert resolve_precision("auto", "cpu", AVX2_CPU) == "fp32"
    assert resolve_precision("auto", "cuda", AVX2_CPU) == "bf16"
    with pytest.raises(ConfigError, match="only on the CPU"):
        resolve_precision("int8", "cuda:0", BF16_CPU)


def test_bf16_on_a_cpu_without_it_warns_with_the_rule_and_the_fix():
    with pytest.warns(PrecisionWarning) as caught:
        assert resolve_precision("bf16", "cpu", AVX2_CPU) == "bf16"  # warned, not refused
    message = str(caught[0].message)
    assert "--precision bf16" in message  # what was received
    assert "AVX512_BF16" in message and "slower than fp32" in message  # the rule and the cost
    assert "--precision fast (here: fp32)" in message and "--precision fp32" in message  # the fix
    assert half_precision_advice("fp16", "cpu", AVX2_CPU) is not None


def test_bf16_where_native_or_on_cuda_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", "cpu", BF16_CPU) == "bf16"
        assert resolve_precision("bf16", "cpu", AMX_CPU) == "bf16"
        assert resolve_precision("bf16", "cuda", AVX2_CPU) == "bf16"
        assert resolve_precision("fp32", "cpu", AVX2_CPU) == "fp32"
    assert half_precision_advice("bf16", "cpu", BF16_CPU) is None
    assert half_precision_advice("bf16", "cuda:0", AVX2_CPU) is None


def test_classifier_warns_at_load_and_records_the_resolved_precision(cpu):
    cpu(AVX2_CPU)
    with pytest.warns(PrecisionWarning, match="slower than fp32"):
        EmotionClassifier(SHIPPED, device="cpu", precision="bf16")
    assert EmotionClassifier(SHIPPED, device="cpu", precision="fast").describe()["precision"] == "fp32"
    cpu(BF16_CPU)
    assert EmotionClassifier(SHIPPED, device="cpu", precision="fast").describe()["precision"] == "bf16"


def emotion_texts(n: int, seed: int = 0) -> list[str]:
    """Tweet-like sentences with emotion words, generated (no dataset needed)."""
    rng = random.Random(seed)
    starts = ["i feel", "i am feeling", "i felt", "today i feel", "honestly i feel", "i still feel", "im"]
    words = ("happy sad angry afraid scared nervous excited glad proud lonely tired hurt calm grateful amazed "
             "shocked curious hopeful anxious furious upset lost weird loved accepted rejected surprised "
             "terrified content bitter helpless joyful").split()
    tails = ["about my job", "because of the rain", "after talking to my mom", "when i see you", "at school",
             "and i do not know why", "since last week", "with my friends", "about the news", ""]
    return [
        " ".join(filter(None, [rng.choice(starts), rng.choice(["", "so", "really", "a bit", "very"]),
                               rng.choice(words), rng.choice(["", "and " + rng.choice(words)]), rng.choice(tails)]))
        for _ in range(n)
    ]


def test_fast_keeps_99_percent_of_fp32_labels_on_the_shipped_model(cpu):
    """Where `fast` is not fp32 itself (bf16 on a CPU with native bf16), it labels like fp32 on the shipped checkpoint."""
    cpu(BF16_CPU)
    texts = emotion_texts(400)
    exact = EmotionClassifier(SHIPPED, device="cpu", precision="fp32")(texts).probs
    fast = EmotionClassifier(SHIPPED, device="cpu", precision="fast")
    assert fast.precision == "bf16"
    probs = fast(texts).probs
    agreement = float((probs.argmax(1) == exact.argmax(1)).mean())
    assert agreement >= MIN_AGREEMENT, f"{fast.precision}: {agreement:.2%} of fp32's labels"
    assert len(set(exact.argmax(1).tolist())) > 1  # the texts are not all one label: agreement means something


def test_run_manifest_records_fast_resolved(tmp_path, cpu, monkeypatch):
    from emodraw_batch.job import runner
    from conftest import write_corpus

    cpu(BF16_CPU)
    model_mod.clear_cache()
    src = write_corpus(tmp_path / "in.parquet", emotion_texts(50, seed=3))
    config = RunConfig(model=SHIPPED, device="cpu", precision="fast")
    runner.run([str(src)], tmp_path / "out", config)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["precision"] == "bf16"
    assert manifest["config"]["precision"] == "fast"  # what was asked, next to what ran
    assert manifest["fingerprint"]["precision"] == "bf16"  # a rerun on an AVX2-only CPU (fp32) would be another job
    model_mod.clear_cache()
    assert manifest["summary"]["rows"] == 50
