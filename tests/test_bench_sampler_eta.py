"""bench/sampler_eta.py runs end to end on a tiny saved member: one row per eta x eta_below, each paired with the
first, with the flip test."""

import json
import sys

from bench_helpers import load_bench


def test_sampler_eta_bench_measures_each_eta_against_the_first(tmp_path, monkeypatch):
    from itercomp.models.language import LanguageModelConfig, build_language_model, build_tokenizer
    from itercomp.models.pretrain import PretrainConfig, build_dit, make_pipeline

    tokenizer = build_tokenizer()
    lm = build_language_model(len(tokenizer), LanguageModelConfig(hidden_size=32, num_layers=2, num_heads=2))
    cfg = PretrainConfig(hidden_size=32, num_heads=2, conv_channels=(8, 16), sampler_eta=0.7)
    make_pipeline(tokenizer, lm, build_dit(cfg, "deep_fusion", lm), cfg).save_pretrained(tmp_path / "member")
    out = tmp_path / "eta.json"
    argv = ["sampler_eta.py", "--member", str(tmp_path / "member"), "--etas", "0", "1", "--eta-below", "1", "0.5"]
    argv += ["--prompts", "2", "--seeds", "1", "--steps", "2", "--flip", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    load_bench("sampler_eta").main()
    result = json.loads(out.read_text())
    assert result["member_sampler"] == {"eta": 0.7, "eta_below": 1.0}
    assert list(result["samplers"]) == [
        "eta 0.0 below 1.0",
        "eta 0.0 below 0.5",
        "eta 1.0 below 1.0",
        "eta 1.0 below 0.5",
    ]
    first = result["samplers"]["eta 0.0 below 1.0"]
    assert first["against_first"]["mean of 3"]["gain"] == 0  # the first setting against itself
    assert first["per_aspect"]["attribute_binding"]["n"] == 2
    # 2 steps (noise 1 -> 0.001 -> 0): below 0.5 both steps draw fresh noise, so eta 1 is the same either way
    assert (
        result["samplers"]["eta 1.0 below 0.5"]["per_aspect"] == result["samplers"]["eta 1.0 below 1.0"]["per_aspect"]
    )
    assert 0 <= first["flip_pairs_found"] <= 2
    assert first["flip_same_order"] is None or 0 <= first["flip_same_order"] <= 1
    assert set(result["samplers"]["eta 1.0 below 1.0"]["against_first"]) == {
        "attribute_binding", "spatial_relationship", "non_spatial_relationship", "mean of 3"
    }  # fmt: skip
