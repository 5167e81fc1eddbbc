"""Build ALBERT checkpoints offline: a tokenizer trained on texts, random weights.

Used by `train --from-scratch`, by the benchmark (an ALBERT-base-shaped model has
the compute of the real one) and by the tests (a tiny model that loads through
the same code path as any Hugging Face checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from emodraw_batch.emotions import EMOTIONS

SPECIAL = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")

# ALBERT sizes; "base" matches albert-base-v2 (12 layers, hidden 768, embedding 128).
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    # "mini": the `distill` student; with an 8k vocabulary ~0.74M parameters, 3 MB (fp32), and a
    # training step ~2.5x cheaper on a CPU than hidden 256 (which would be 1.13M, 4.5 MB).
    "mini": dict(embedding_size=64, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512),
    "small": dict(embedding_size=64, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(embedding_size=128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, kind: str = "wordpiece"):
    """A lower-casing tokenizer with ALBERT's special tokens, as a transformers fast tokenizer.

    `wordpiece` is BERT-style. `bpe` merges pieces of words marked with "▁" (SentencePiece-style,
    as in ALBERT's own tokenizer) and trains deterministically, which `train --from-scratch` needs
    for reproducible runs: the WordPiece trainer numbers its "##" pieces in hash-map order, so
    which tied merges it picks, and hence its vocabulary, varies from run to run.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False)
    else:
        tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False)
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def new_albert(
    tokenizer,
    labels: Sequence[str] = EMOTIONS,
    size: str = "tiny",
    max_position_embeddings: int = 512,
    seed: int = 0,
    initializer_range: float = 0.02,
):
    """A randomly initialised ALBERT classifier (in eval mode) sized for the tokenizer and labels."""
    import torch
    from transformers import AlbertConfig, AlbertForSequenceClassification

    torch.manual_seed(seed)
    config = AlbertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        classifier_dropout_prob=0.1,
        initializer_range=initializer_range,
        **SIZES[size],
    )
    return AlbertForSequenceClassification(config).eval()


def build_albert(
    out_dir: str | Path,
    tokenizer,
    labels: Sequence[str] = EMOTIONS,
    size: str = "tiny",
    max_position_embeddings: int = 512,
    seed: int = 0,
    initializer_range: float = 0.02,
) -> Path:
    """Save a randomly initialised ALBERT classifier plus its tokenizer as a HF folder (safetensors)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = new_albert(tokenizer, labels, size, max_position_embeddings, seed, initializer_range)
    out = Path(out_dir)
    model.save_pretrained(out)  # transformers 5 writes model.safetensors
    tokenizer.save_pretrained(out)
    return out

