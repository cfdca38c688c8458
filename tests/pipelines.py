"""Tiny pipelines built from configs under a fixed seed, for tests on CPU (no hub, no shipped weights).

A helper module, not a test file: test files import it (or use the `shapes_pipe` fixture of conftest.py) rather
than importing each other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from itercomp.models.language import LanguageModelConfig, build_language_model, build_tokenizer
from itercomp.models.pretrain import PretrainConfig, build_dit, make_pipeline


def shapes_pipeline(prediction_type: str = "sample"):
    """A ShapesDiTPipeline with a 2-layer language model and a 32-wide DiT, weights drawn under seed 0."""
    tokenizer = build_tokenizer()
    lm = build_language_model(
        len(tokenizer), LanguageModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    )
    cfg = PretrainConfig(hidden_size=32, num_heads=2, conv_channels=(8, 16), prediction_type=prediction_type)
    torch.manual_seed(0)
    dit = build_dit(cfg, "deep_fusion", lm)
    for p in dit.parameters():  # zero-initialised gates would give no gradient to most weights
        p.data.normal_(0, 0.05)
    return make_pipeline(tokenizer, lm, dit, cfg)


def tiny_backbone(kind: str, folder: Path) -> Path:
    """A tiny BLIP / CLIP / SigLIP saved like a hub checkpoint (model + tokenizer), never downloaded."""
    from transformers import BlipConfig, BlipForImageTextRetrieval, CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    torch.manual_seed(0)
    vision = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=30, patch_size=6
    )
    from reward_models.tokenizer import build_world_tokenizer

    tokenizer = build_world_tokenizer(40)
    ids = dict(bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, pad_token_id=0)
    text = dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=40,
        **ids,
    )
    if kind == "blip":
        model = BlipForImageTextRetrieval(
            BlipConfig(vision_config=vision, text_config={**text, "encoder_hidden_size": 32, "sep_token_id": 3})
        )
    elif kind == "clip":
        model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
    else:
        model = SiglipModel(SiglipConfig(vision_config=vision, text_config=text))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
