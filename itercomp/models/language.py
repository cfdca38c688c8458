"""The language model that encodes prompts: any Hugging Face causal LM; for the shapes world a tiny Llama.

The tokenizer is built offline (word level over the world's vocabulary) and the LM is pretrained with
next-token prediction on the `train` split captions, then frozen. The DiT reads `output_hidden_states`: the
embeddings plus one tensor per layer, so block i of the DiT can read layer i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from itercomp.world.vocab import world_words

SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def build_tokenizer(words: list[str] | None = None, max_length: int = 40) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the world's words; unknown words map to <unk> rather than failing."""
    vocab = {token: i for i, token in enumerate(SPECIAL.values())}
    for word in words or sorted(world_words()):  # alphabetical: the shipped language model's token ids
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=max_length, **SPECIAL)
    tokenizer.padding_side = "right"
    return tokenizer


@dataclass
class LanguageModelConfig:
    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 4
    intermediate_size: int = 384
    max_length: int = 40


def build_language_model(vocab_size: int, config: LanguageModelConfig, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            max_position_embeddings=config.max_length + 8,
            tie_word_embeddings=True,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            attn_implementation="sdpa",
        )
    )


def tokenize(tokenizer, prompts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """<s> prompt </s>, padded to the longest in the batch; an empty prompt (the CFG null) is just <s> </s>."""
    texts = [f"{tokenizer.bos_token} {p.lower()} {tokenizer.eos_token}" for p in prompts]
    return tokenizer(
        texts,
        padding="longest",
        truncation=True,
        max_length=max_length or tokenizer.model_max_length,
        return_tensors="pt",
        add_special_tokens=False,
    )


@torch.no_grad()
def encode(lm, tokenizer, prompts: list[str]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Run the LM once: (hidden states of the embeddings and every layer, attention mask)."""
    batch = tokenize(tokenizer, prompts).to(lm.device)
    out = (
        lm.model(**batch, output_hidden_states=True) if hasattr(lm, "model") else lm(**batch, output_hidden_states=True)
    )
    return tuple(out.hidden_states), batch["attention_mask"].bool()


def next_token_loss(lm, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return lm(**batch, labels=labels).loss
