"""Reward models: differentiable preprocessing, backbones (tiny configs), pair loss, simulated data, training."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from itercomp.io import read_jsonl
from itercomp.prompts import split_for
from itercomp.rankings import RankingFile
from itercomp.world import REWARD_ASPECTS, generate_prompts, parse, render, score
from itercomp.world.edits import edits
from reward_models.config import RankingDataConfig, RewardTrainConfig, load_config
from reward_models.data import pair_loss
from reward_models.ensemble import RewardEnsemble
from reward_models.model import RewardModel
from reward_models.preprocess import preprocess, resize_center_crop
from reward_models.simulate import make_rankings
from reward_models.tokenizer import build_world_tokenizer

WEIGHTS = Path(__file__).resolve().parents[1] / "itercomp" / "weights" / "rewards"
TINY = {"width": 32, "image_layers": 1, "fusion_layers": 1, "heads": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_backbone(kind: str, folder: Path) -> Path:
    """A tiny BLIP / CLIP / SigLIP saved like a hub checkpoint (model + tokenizer), never downloaded."""
    from transformers import BlipConfig, BlipForImageTextRetrieval, CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    torch.manual_seed(0)
    vision = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=30, patch_size=6
    )
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


PROMPTS = ["a red circle and a hollow blue square", "a small green triangle to the left of a white cross"]


# ---- preprocessing and the model --------------------------------------------------------------------------
def test_resize_center_crop_shapes():
    assert resize_center_crop(torch.rand(2, 3, 40, 64), 32).shape == (2, 3, 32, 32)
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(resize_center_crop(x, 32), x)
    out = preprocess(torch.full((1, 3, 64, 48), 0.5), 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-6)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        preprocess(torch.rand(3, 32, 32), 32, (0.5,) * 3, (0.5,) * 3)


def test_gradient_reaches_input_image():
    torch.manual_seed(0)
    model = RewardModel.for_shapes_world("attribute_binding", **TINY)
    images = torch.rand(2, 3, 48, 48, requires_grad=True)
    model.score(images, PROMPTS).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_world_tokenizer_knows_every_word():
    tokenizer = build_world_tokenizer()
    for aspect in (*REWARD_ASPECTS, "complex"):
        for prompt in generate_prompts(aspect, "train", 20):
            assert tokenizer.unk_token_id not in tokenizer(prompt)["input_ids"], prompt


def test_save_load_roundtrip_keeps_scores_and_stats(tmp_path):
    torch.manual_seed(0)
    model = RewardModel.for_shapes_world("spatial_relationship", **TINY)
    model.set_reward_stats(0.25, 2.0)
    images = torch.rand(2, 3, 32, 32)
    model.save_pretrained(tmp_path)
    loaded = RewardModel.from_pretrained(tmp_path)
    assert loaded.config.reward_mean == 0.25 and loaded.config.reward_std == 2.0
    raw = loaded.score(images, PROMPTS, normalize=False)
    assert torch.allclose(raw, model.score(images, PROMPTS, normalize=False), atol=1e-6)
    assert torch.allclose(loaded.score(images, PROMPTS), (raw - 0.25) / 2.0)


@pytest.mark.parametrize("kind", ["blip", "clip", "siglip"])
def test_transformers_backbones_from_tiny_configs(kind, tmp_path):
    backbone = tiny_backbone(kind, tmp_path / "backbone")
    model = RewardModel.from_backbone(kind, str(backbone), aspect="attribute_binding")
    assert model.config.image_size == 30
    images = torch.rand(2, 3, 40, 52, requires_grad=True)
    rewards = model.score(images, PROMPTS)
    # The head starts small; scale the reward so the gradient is well above float noise.
    (rewards * 1e3).sum().backward()
    assert images.grad.abs().sum() > 0
    model.save_pretrained(tmp_path / "reward")
    loaded = RewardModel.from_pretrained(tmp_path / "reward")
    assert torch.allclose(loaded.score(images.detach(), PROMPTS), rewards.detach(), atol=1e-5)
    frozen = loaded.freeze_backbone(0.7)
    trainable = [p for p in loaded.parameters() if p.requires_grad]
    assert frozen > 0 and trainable and len(trainable) < len(list(loaded.parameters()))


# ---- pairs, splits and simulated data ------------------------------------------------------------------
def test_bradley_terry_loss():
    rewards = torch.tensor([2.0, 0.0, 1.0])
    loss = pair_loss(rewards, torch.tensor([0, 2]), torch.tensor([1, 1]))
    assert math.isclose(loss.item(), (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2, rel_tol=1e-6)


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    config = RankingDataConfig(
        output_dir=str(out), aspects=("attribute_binding",), train_prompts=24, val_prompts=6, test_prompts=6
    )
    return make_rankings(config)


def test_simulated_rankings_follow_the_oracle(sim_data):
    rows = read_jsonl(sim_data)
    assert len(rows) == 36
    data = RankingFile.read(sim_data)
    assert {split_for(r.prompt) for r in data.rankings} == {"train", "val", "test"}
    for ranking in data.rankings[:12]:
        from reward_models.data import load_image

        by_id = {c.image_id: c for c in ranking.candidates}
        scores = [score(load_image(data.root / by_id[i].path), ranking.prompt).score for i in ranking.order]
        assert scores == sorted(scores, reverse=True)
        assert min(np.diff(sorted(scores))) >= 0.05 - 1e-9 if len(scores) > 1 else True
        assert len(ranking.candidates) >= 2


# ---- training --------------------------------------------------------------------------------------------
def _train_config(sim_data, out, **overrides):
    fields = dict(
        rankings=str(sim_data),
        output_dir=str(out),
        aspects=("attribute_binding",),
        epochs=3,
        batch_rankings=8,
        learning_rate=3e-3,
        threads=1,
        cpu=True,
        **TINY,
    )
    return RewardTrainConfig(**{**fields, **overrides})


def test_training_lowers_loss_saves_best_and_stats(sim_data, tmp_path):
    from reward_models.training import build_model, train

    config = _train_config(sim_data, tmp_path / "rm", epochs=4)
    torch.manual_seed(config.seed)
    before = {k: v.clone() for k, v in build_model(config, "attribute_binding").state_dict().items()}
    summary = train(config)["attribute_binding"]
    history = summary["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    folder = tmp_path / "rm" / "attribute_binding"
    loaded = RewardModel.from_pretrained(folder)
    changed = [k for k, v in loaded.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2
    assert loaded.config.reward_std > 0 and loaded.config.reward_std != 1.0
    state = json.loads((folder / "train_state.json").read_text())
    assert state["best_epoch"] == min(range(len(history)), key=lambda e: history[e]["val_loss"])
    assert (tmp_path / "rm" / "train_config.yaml").is_file()
    ensemble = RewardEnsemble.from_pretrained(tmp_path / "rm", aspects=("attribute_binding",))
    images = torch.rand(3, 3, 64, 64, requires_grad=True)
    out = ensemble(images, PROMPTS + PROMPTS[:1])
    assert set(out) == {"attribute_binding"} and out["attribute_binding"].shape == (3,)
    out["attribute_binding"].sum().backward()
    assert images.grad.abs().sum() > 0


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rankings: r.jsonl\noutput_dir: out\nepochs: 7\naspects: [spatial_relationship]\n")
    config = load_config(RewardTrainConfig, ["--config", str(path), "--epochs", "2", "--cpu", "true"])
    assert (config.epochs, config.cpu, config.aspects) == (2, True, ("spatial_relationship",))
    path.write_text("rankings: r.jsonl\noutput_dir: out\nepoch: 7\n")
    from itercomp.errors import ItercompError

    with pytest.raises(ItercompError, match="unknown keys \\['epoch'\\]"):
        load_config(RewardTrainConfig, ["--config", str(path)])


def test_cli_train_and_eval(sim_data, tmp_path):
    from itercomp.cli import main

    out = tmp_path / "rm"
    argv = ["rewards", "train", "--rankings", str(sim_data), "--output_dir", str(out), "--aspects", "attribute_binding"]
    argv += ["--epochs", "1", "--cpu", "true", "--threads", "1"] + [
        x for k, v in TINY.items() for x in (f"--{k}", str(v))
    ]
    assert main(argv) == 0
    assert (
        main(["rewards", "eval", "--models", str(out), "--rankings", str(sim_data), "--out", str(tmp_path / "e.json")])
        == 0
    )
    result = json.loads((tmp_path / "e.json").read_text())["results"]["attribute_binding"]
    assert result["rankings"] == 6 and 0 <= result["pair_accuracy"] <= 1 and result["oracle_pairs"] > 0
    assert main(["rewards", "export", "--models", str(out), "--out", str(tmp_path / "shipped")]) == 0
    shipped = RewardModel.from_pretrained(tmp_path / "shipped" / "attribute_binding")
    original = RewardModel.from_pretrained(out / "attribute_binding")
    images = torch.rand(2, 3, 32, 32)
    assert next(shipped.parameters()).dtype == torch.float32  # stored as fp16, loaded as fp32
    assert torch.allclose(shipped.score(images, PROMPTS), original.score(images, PROMPTS), atol=1e-2)


def test_two_process_training_splits_data_and_agrees(sim_data, tmp_path):
    """`accelerate launch` with two CPU processes (gloo): world size 2, disjoint shards, identical weights."""
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    out = tmp_path / "ddp"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"]
    command += [str(root / "recipes" / "train_reward_models.py"), "--rankings", str(sim_data), "--output_dir", str(out)]
    command += [
        "--aspects",
        "attribute_binding",
        "--epochs",
        "2",
        "--batch_rankings",
        "4",
        "--cpu",
        "true",
        "--threads",
        "1",
    ]
    command += [x for k, v in TINY.items() for x in (f"--{k}", str(v))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "attribute_binding" / "train_state.json").read_text())
    assert state["world_size"] == 2
    ranks = state["processes"]
    assert sorted(p["rank"] for p in ranks) == [0, 1]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    first, second = set(ranks[0]["last_epoch_ids"]), set(ranks[1]["last_epoch_ids"])
    assert first and second and not first & second
    assert len(first | second) == state["train_rankings"]


def test_shipped_ensemble_prefers_the_true_render():
    ensemble = RewardEnsemble.from_pretrained(WEIGHTS)
    assert ensemble.aspects == list(REWARD_ASPECTS)
    rng = np.random.default_rng(0)
    wins = total = 0
    for aspect in REWARD_ASPECTS:
        for prompt in generate_prompts(aspect, "test", 4):
            scene = parse(prompt)
            negative = next(e for kind, e in edits(scene, rng) if kind == "change_color")
            images = (
                torch.from_numpy(np.stack([render(scene, 0), render(negative, 1)])).permute(0, 3, 1, 2).float() / 255
            )
            rewards = ensemble(images, [prompt, prompt])[aspect]
            wins, total = wins + int(rewards[0] > rewards[1]), total + 1
    assert wins >= 0.75 * total


def test_phrase_slots_bind_words_to_their_objects_colour():
    from itercomp.world import COLORS
    from reward_models.backbones import phrase_slots

    words = ["a", "small", "green", "triangle", "to", "the", "left", "of", "a", "white", "cross"]
    first, second = phrase_slots(words)
    green, white = COLORS.index("green"), COLORS.index("white")
    assert first[words.index("triangle")] == second[words.index("triangle")] == green
    assert (first[words.index("left")], second[words.index("left")]) == (green, white)
    assert first[0] == -1 and first[-1] == white
    first, _ = phrase_slots(["a", "red", "circle", "and", "a", "blue", "square"])
    assert first[3] == -1  # "and" relates nothing
