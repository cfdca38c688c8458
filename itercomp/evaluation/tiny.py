"""Tiny random BLIP-VQA, OWLv2 and CLIP models with processors built offline, for tests (no hub, CPU, milliseconds).

`save_tiny_evaluators(folder)` writes the three with `save_pretrained` and returns the `t2i_compbench` options
that load them back through the evaluator's own `from_pretrained` path, as a user's real checkpoints load:

    options = save_tiny_evaluators(tmp_path)
    evaluator = build_evaluator(options)
"""

from __future__ import annotations

from pathlib import Path

from itercomp.world.vocab import world_words

IMAGE_SIZE = 32  # every tiny model reads 32 x 32 pixels (any image is resized to it by its processor)
WIDTH = 32
# Words the tiny tokenizers know whole (others fall back to letters): the shapes world's, the question answers
# BLIP-VQA's score reads, and the words of the prompts tests use.
_EXTRA_WORDS = ("yes", "no", "photo", "of", "on", "top", "bottom", "next", "near", "side", "is", "was")


def _words() -> list[str]:
    return list(dict.fromkeys([*world_words(), *_EXTRA_WORDS]))


def tiny_bert_tokenizer():
    """A WordPiece tokenizer with BLIP's special tokens ([DEC] starts an answer); letters as '##x' pieces."""
    from transformers import BertTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "?", ".", ",", *letters]
    tokens += [f"##{c}" for c in letters] + [w for w in _words() if w not in tokens]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, model_max_length=32)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def tiny_clip_tokenizer(max_length: int):
    """CLIP's byte-level BPE with a vocabulary of letters plus merges that make each known word one token."""
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab: dict[str, int] = {}
    # The start token is not id 0: OWL models take a query whose first id is 0 for padding and mask it out.
    for token in [
        *letters,
        "<|startoftext|>",
        "<|endoftext|>",
        *(f"{c}</w>" for c in letters),
        "?</w>",
        ".</w>",
        ",</w>",
    ]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _words():
        pieces = [*word[:-1], word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merged = current + piece
            if merged not in vocab:
                merges.append((current, piece))
                vocab[merged] = len(vocab)
            current = merged
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def _clip_token_ids(tokenizer) -> dict:
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}  # fmt: skip


def build_tiny_blip_vqa():
    """(BlipForQuestionAnswering, BlipProcessor), random weights under a fixed seed."""
    import torch
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    tokenizer = tiny_bert_tokenizer()
    torch.manual_seed(0)
    config = BlipConfig(
        vision_config=dict(
            hidden_size=WIDTH, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=IMAGE_SIZE, patch_size=8,
        ),
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=32, encoder_hidden_size=WIDTH,
            bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]"), pad_token_id=tokenizer.pad_token_id,
            sep_token_id=tokenizer.sep_token_id,
        ),
        projection_dim=WIDTH,
    )  # fmt: skip
    model = BlipForQuestionAnswering(config).eval()
    processor = BlipProcessor(BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer)
    return model, processor


def build_tiny_owlv2():
    """(Owlv2ForObjectDetection, Owlv2Processor), random weights under a fixed seed."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    max_length = 16  # OWL's processor pads every query to the text model's length
    tokenizer = tiny_clip_tokenizer(max_length)
    torch.manual_seed(0)
    config = Owlv2Config(**_two_towers(tokenizer, max_length))
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():  # the heads start at std 1, which saturates every box; small heads keep the patch priors
        for head in (model.class_head, model.box_head):
            for weight in (p for p in head.parameters() if p.dim() > 1):
                weight.normal_(std=0.02)
    image_processor = Owlv2ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return model, Owlv2Processor(image_processor, tokenizer)


def _two_towers(tokenizer, max_length: int) -> dict:
    """The text and vision towers (and projection) of a tiny CLIP-style model: OWLv2's and CLIP's alike."""
    return dict(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=max_length, **_clip_token_ids(tokenizer),
        ),
        vision_config=dict(
            hidden_size=WIDTH, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=IMAGE_SIZE, patch_size=8,
        ),
        projection_dim=WIDTH,
    )  # fmt: skip


def build_tiny_clip():
    """(CLIPModel, CLIPProcessor), random weights under a fixed seed."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    max_length = 77  # CLIP's context length
    tokenizer = tiny_clip_tokenizer(max_length)
    torch.manual_seed(0)
    config = CLIPConfig(**_two_towers(tokenizer, max_length))
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return model, CLIPProcessor(image_processor, tokenizer)


def save_tiny_evaluators(folder) -> dict:
    """Write the tiny BLIP-VQA, OWLv2 and CLIP (model and processor each) under `folder`/{blip_vqa,owlv2,clip};
    returns the `t2i_compbench` evaluator options that load them."""
    folder = Path(folder)
    options = {"type": "t2i_compbench"}
    for key, name, build in (
        ("vqa_model", "blip_vqa", build_tiny_blip_vqa),
        ("detector_model", "owlv2", build_tiny_owlv2),
        ("clip_model", "clip", build_tiny_clip),
    ):
        model, processor = build()
        model.save_pretrained(folder / name)
        processor.save_pretrained(folder / name)
        options[key] = str(folder / name)
    return options
