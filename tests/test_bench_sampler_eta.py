"""bench/sampler_eta.py runs end to end on a tiny saved member: one row per eta, each paired with the first."""

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
    argv = ["sampler_eta.py", "--member", str(tmp_path / "member"), "--etas", "0", "1", "--prompts", "2"]
    monkeypatch.setattr(sys, "argv", [*argv, "--seeds", "1", "--steps", "2", "--out", str(out)])
    load_bench("sampler_eta").main()
    result = json.loads(out.read_text())
    assert result["member_eta"] == 0.7 and list(result["etas"]) == ["0.0", "1.0"]
    first = result["etas"]["0.0"]
    assert first["against_first"]["mean of 3"]["gain"] == 0  # the first eta against itself
    assert first["per_aspect"]["attribute_binding"]["n"] == 2
    assert set(result["etas"]["1.0"]["against_first"]) == {
        "attribute_binding", "spatial_relationship", "non_spatial_relationship", "mean of 3"
    }  # fmt: skip
