"""bench/train_step.py times real training steps of the DiT, in fp32 and under bf16 autocast."""

from bench_helpers import load_bench

from itercomp.models.language import LanguageModelConfig, build_language_model, build_tokenizer
from itercomp.models.pretrain import PretrainConfig


def test_time_steps_runs_eager_and_bf16_steps_of_a_tiny_dit():
    bench = load_bench("train_step")
    lm = build_language_model(len(build_tokenizer()), LanguageModelConfig(hidden_size=32, num_layers=2, num_heads=2))
    cfg = PretrainConfig(hidden_size=32, num_heads=2, conv_channels=(8,), canvas=16)
    for mode in ("eager", "bf16"):
        result = bench.time_steps(cfg, lm, mode, batch_size=2, steps=2, tokens=5, warmup=1)
        assert result["ms_per_step"] > 0 and result["images_per_second"] > 0
