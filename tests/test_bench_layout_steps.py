"""bench/layout_steps.py: the caption's mean render swapped in for a model's x0 at the sampler's steps."""

import torch
from bench_helpers import load_bench


def test_the_mean_render_at_every_step_draws_the_relation_a_blind_model_ignores():
    from itercomp.models.language import LanguageModelConfig, build_language_model, build_tokenizer
    from itercomp.models.pretrain import PretrainConfig, build_dit, make_pipeline

    bench, probe = load_bench("layout_steps"), load_bench("relation_probe")
    tokenizer = build_tokenizer()
    lm = build_language_model(len(tokenizer), LanguageModelConfig(hidden_size=32, num_layers=2, num_heads=2))
    cfg = PretrainConfig(hidden_size=32, num_heads=2, conv_channels=(8, 16), num_inference_steps=4)
    pipe = make_pipeline(tokenizer, lm, build_dit(cfg, "deep_fusion", lm), cfg)  # zero output: x0 = 0 everywhere
    pipe.set_progress_bar_config(disable=True)
    prompt = "a large red square to the left of a large blue square"
    flipped = prompt.replace("to the left of", "to the right of")
    means = torch.stack(
        [probe.to_pixels([probe.render(q, seed=s) for s in range(16)]).mean(0) for q in (prompt, flipped)]
    )
    for alpha, cut, expect in ((1.0, 0.0, (True, False)), (0.0, 0.0, (None, None))):
        blended = bench.MeanAtHighNoise(pipe.transformer, alpha, cut, trunk=True)
        blended.means = means
        pipe.transformer.forward = blended.__call__
        offset, same = probe.sampled_layout(pipe, prompt, seed=0)
        del pipe.transformer.forward
        assert (None if offset is None else offset > 0, same) == expect  # black images: no objects found
