"""Tiny pipelines built from configs under a fixed seed, for tests on CPU (no hub, no shipped weights).

A helper module, not a test file: test files import it (or use the `shapes_pipe` fixture of conftest.py) rather
than importing each other.
"""

from __future__ import annotations

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
