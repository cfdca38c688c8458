"""`itercomp iterate` the way a researcher with GPUs runs it, on tiny components built from configs: an SDXL base
in a gallery of SD + SDXL, prompts from T2I-CompBench-style files, BLIP reward models trained from a backbone, the
real fine-tuner, and the t2i_compbench evaluator (BLIP-VQA, OWLv2, CLIP) scoring the test images and ranking for
the simulated annotators. Killed in round 2 and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pipelines import tiny_backbone

from gallery.tiny import TINY_CALL, save_tiny_pipeline
from itercomp.evaluation.tiny import save_tiny_evaluators
from itercomp.io import read_jsonl
from itercomp.loop.config import IterateConfig
from itercomp.loop.layout import STAGES, RunLayout
from itercomp.prompts import text_key
from itercomp.world.vocab import ASPECTS, REWARD_ASPECTS

pytestmark = pytest.mark.usefixtures("one_thread")

OBJECTS = ["car", "bird", "bench", "bowl", "lamp", "dog", "cat", "clock", "cup", "book"]
COLOURS = ["red", "blue", "green", "brown", "white", "black"]


def _lines(template: str, n: int) -> list[str]:
    return [
        template.format(c=COLOURS[i % 6], a=OBJECTS[i % 10], b=OBJECTS[(i // 10 + i + 1) % 10], i=i) for i in range(n)
    ]


@pytest.fixture(scope="module")
def real_world(tmp_path_factory):
    """Tiny SD and SDXL pipelines in a gallery YAML, a tiny BLIP backbone, tiny evaluator models, prompt files."""
    root = tmp_path_factory.mktemp("real")
    call = {**TINY_CALL["stable_diffusion_xl"], "num_inference_steps": 2, "guidance_scale": 1.0}
    members = []
    for name, kind, pipeline in (("sd", "stable_diffusion", "StableDiffusionPipeline"),
                                 ("sdxl", "stable_diffusion_xl", "StableDiffusionXLPipeline")):  # fmt: skip
        folder = save_tiny_pipeline(kind, root / name)
        members.append({"name": name, "type": "diffusers", "model": str(folder), "pipeline": pipeline, "call": call,
                        "batch_size": 8})  # fmt: skip
    (root / "gallery.yaml").write_text(yaml.safe_dump({"name": "tiny_real", "members": members}))
    tiny_backbone("blip", root / "blip")
    evaluator = save_tiny_evaluators(root / "evaluators")
    prompts = root / "prompts"
    prompts.mkdir()
    files = {
        "color_train.txt": _lines("a {c} {a} and a {c} {b} number {i}", 40),
        "spatial_train.txt": _lines("a {a} on the left of a {b} number {i}", 40),
        "non_spatial_train.txt": _lines("a {a} is watching a {b} number {i}", 40),
        # Two test prompts repeat training prompts: they must never be ranked or fine-tuned on.
        "color_val.txt": ["a red car and a red bird number 0", "a blue bench and a blue bowl"],
        "spatial_val.txt": ["a car on the left of a bird number 0", "a lamp on the right of a dog"],
        "non_spatial_val.txt": ["a man is holding a cup", "a cat is watching a clock"],
        "complex_val.txt": ["The red book was on top of the brown table.", "A black dog sat beside a white cup."],
    }
    for name, lines in files.items():
        (prompts / name).write_text("\n".join(lines) + "\n")
    return root, evaluator


def _config(root: Path, evaluator: dict, out: Path) -> IterateConfig:
    prompts = root / "prompts"
    return IterateConfig(
        rounds=2, output_dir=str(out), gallery=str(root / "gallery.yaml"), base_member="sdxl", threads=1,
        prompts={
            "source": "files",
            "ranking": [str(prompts / f"{c}_train.txt") for c in ("color", "spatial", "non_spatial")],
            "test": [str(prompts / f"{c}_val.txt") for c in ("color", "spatial", "non_spatial", "complex")],
        },
        prompts_per_aspect=2, val_prompts_per_aspect=1, current_model_seeds=2, simulated_annotators=2,
        reward_init=None,
        rewards={"backbone": "blip", "backbone_path": str(root / "blip"), "image_size": 30, "epochs": 1,
                 "batch_rankings": 2, "gradient_accumulation_steps": 1, "cpu": True, "mixed_precision": "no"},
        finetune_recipe="reward_ft_sdxl",
        finetune={"max_steps": 1, "batch_size": 1, "gradient_accumulation_steps": 1, "eval_prompts": 1,
                  "checkpoint_every": 1, "mixed_precision": "no", "gradient_checkpointing": False, "lora_rank": 2,
                  "lora_alpha": 2, "resolution": 32, "cpu": True},
        evaluator=evaluator, eval_prompts_per_aspect=2, eval_batch_size=4, grid_prompts=1,
    )  # fmt: skip


def _iterate(config, **kwargs):
    from itercomp.loop.run import iterate

    return iterate(config, log=lambda _: None, **kwargs)


def test_two_rounds_on_tiny_real_models_survive_a_kill_and_keep_test_prompts_out(real_world, tmp_path):
    from itercomp.finetune import FeedbackConfig, finetune

    root, evaluator = real_world
    out = tmp_path / "run"

    def killed_in_round_2(pipe, reward_fn, prompts, config, **kwargs):
        if Path(config.output_dir).parent.name == "round_2":
            raise RuntimeError("killed during fine-tuning")
        return finetune(pipe, reward_fn, prompts, config, **kwargs)

    with pytest.raises(RuntimeError, match="killed"):
        _iterate(_config(root, evaluator, out), finetune_fn=killed_in_round_2, feedback_config_cls=FeedbackConfig)
    report = _iterate(_config(root, evaluator, out), resume=True)

    layout = RunLayout(out)
    assert report["complete"] and report["rounds_complete"] == 2
    assert report["evaluator"]["type"] == "t2i_compbench" and report["measure"] == "mean_score"
    for entry in report["rounds"]:
        assert set(entry["test"]) == set(ASPECTS)
        assert all(entry["test"][a]["n"] == 2 and 0 <= entry["test"][a]["mean_score"] <= 1 for a in ASPECTS)
        if entry["round"]:
            assert set(entry["timings"]) == set(STAGES) and entry["finetune"]["steps"] == 1
            assert all(entry["rewards"][a]["train"]["train_rankings"] >= 1 for a in REWARD_ASPECTS)
    # The fine-tuned SDXL joined the gallery, and the reward models are BLIP models trained from the backbone.
    manifest = read_jsonl(layout.stage(2, "gallery") / "manifest.jsonl")
    assert {"sd", "sdxl", "sdxl_r1"} == {m["generator"] for m in manifest}
    reward_config = json.loads((layout.stage(1, "rewards") / "attribute_binding" / "config.json").read_text())
    assert reward_config["backbone"] == "blip" and reward_config["image_size"] == 30
    assert (layout.pipeline(2) / "model_index.json").is_file()

    # No test prompt was ranked or fine-tuned on (two of them repeat training prompts).
    test = {text_key(r["prompt"]) for r in read_jsonl(layout.stage(0, "eval") / "rows.jsonl")}
    ranked = {text_key(m["prompt"]) for k in (1, 2) for m in read_jsonl(layout.stage(k, "gallery") / "manifest.jsonl")}
    tuned = yaml.safe_load((layout.stage(1, "model") / "feedback_config.yaml").read_text())
    assert len(test) == 8 and not test & ranked
    assert "a red car and a red bird number 0" not in {r["prompt"] for r in read_jsonl(
        layout.stage(1, "rankings") / "rankings.jsonl")}  # fmt: skip
    assert tuned["output_dir"].endswith("round_1/model")
    summary = json.loads((layout.stage(1, "eval") / "done.json").read_text())["summary"]
    assert summary["evaluator"]["type"] == "t2i_compbench"
