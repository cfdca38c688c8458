"""A word-level tokenizer over the shapes world's vocabulary, built offline with the `tokenizers` library."""

from __future__ import annotations

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from itercomp.world.vocab import world_words

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def world_vocab() -> dict[str, int]:
    """Token ids of the world tokenizer (fixed: special tokens, then the world's words in a fixed order)."""
    return {token: i for i, token in enumerate([*SPECIAL_TOKENS, *world_words()])}


def build_world_tokenizer(max_length: int = 32) -> PreTrainedTokenizerFast:
    """[CLS] words [SEP], lower-cased, punctuation split off; unknown words map to [UNK]."""
    vocab = world_vocab()
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=max_length,
    )
