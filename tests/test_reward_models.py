"""Reward models: differentiable preprocessing, backbones (tiny configs), pair loss, simulated data, training."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pipelines import tiny_backbone

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


# ---- real backbones: image size, accumulation, resume, image cache, ImageReward ---------------------------
@pytest.mark.parametrize("kind", ["blip", "clip", "siglip"])
def test_image_size_resamples_the_position_embedding_and_reloads(kind, tmp_path):
    from reward_models.backbones import POSITION_EMBEDDING

    backbone = tiny_backbone(kind, tmp_path / "backbone")  # native 30 px, patches of 6: a 5 x 5 grid
    model = RewardModel.from_backbone(kind, str(backbone), image_size=36)
    key, prefix = POSITION_EMBEDDING[kind]
    table = model.vision.state_dict()[key]
    assert model.config.image_size == 36 and model.config.backbone_config["vision_config"]["image_size"] == 36
    assert table.shape[-2] == prefix + 36
    native = RewardModel.from_backbone(kind, str(backbone))
    assert torch.equal(table[..., :prefix, :], native.vision.state_dict()[key][..., :prefix, :])
    images = torch.rand(2, 3, 40, 52)
    rewards = model.score(images, PROMPTS)
    model.save_pretrained(tmp_path / "reward")
    loaded = RewardModel.from_pretrained(tmp_path / "reward")
    assert loaded.config.image_size == 36
    assert torch.allclose(loaded.score(images, PROMPTS), rewards, atol=1e-5)
    back = loaded.resized(30)  # back to the native grid: a bicubic round trip stays close to the original table
    assert back.vision.state_dict()[key].shape == native.vision.state_dict()[key].shape
    with pytest.raises(ValueError, match="multiple of the .* patch size 6"):
        native.resized(32)


def test_blip_reward_model_trains_and_scores_at_a_non_native_size(sim_data, tmp_path):
    from reward_models.training import train

    backbone = tiny_backbone("blip", tmp_path / "backbone")
    config = _train_config(
        sim_data, tmp_path / "rm", backbone="blip", backbone_path=str(backbone), image_size=24, epochs=2,
        learning_rate=1e-3,
    )  # fmt: skip
    summary = train(config)["attribute_binding"]
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    loaded = RewardModel.from_pretrained(tmp_path / "rm" / "attribute_binding")
    assert loaded.config.image_size == 24
    assert loaded.config.backbone_config["vision_config"]["image_size"] == 24
    assert loaded.vision.embeddings.position_embedding.shape == (1, 1 + 4 * 4, 32)
    start = RewardModel.from_backbone("blip", str(backbone), image_size=24)
    assert not torch.equal(loaded.vision.embeddings.position_embedding, start.vision.embeddings.position_embedding)
    scores = loaded.score(torch.rand(2, 3, 64, 48), PROMPTS)
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def _equal_pair_rankings(sim_data, out: Path) -> Path:
    """sim_data's rankings cut to their three best candidates: 3 pairs each, so every batch of B rankings has
    3B pairs (paths made absolute, so the file can live elsewhere)."""
    from itercomp.io import write_jsonl

    rows = []
    for row in read_jsonl(sim_data):
        keep = row["order"][:3]
        candidates = [c for c in row["candidates"] if c["image_id"] in keep]
        for c in candidates:
            c["path"] = str(sim_data.parent / c["path"])
        rows.append({**row, "candidates": candidates, "order": keep, "shown_order": None})
    write_jsonl(out, rows)
    return out


def test_gradient_accumulation_equals_one_batch_of_the_same_rankings(sim_data, tmp_path):
    """2 batches of 4 rankings accumulated give the weights of one batch of 8: the schedule counts optimiser
    steps, and with equally many pairs per batch the mean of the batch means is the mean over all pairs."""
    from reward_models.training import train

    rankings = _equal_pair_rankings(sim_data, tmp_path / "rankings.jsonl")
    common = dict(rankings=str(rankings), epochs=2, max_train_rankings=16)
    accumulated = _train_config(sim_data, tmp_path / "a", batch_rankings=4, gradient_accumulation_steps=2, **common)
    one_batch = _train_config(sim_data, tmp_path / "b", batch_rankings=8, **common)
    runs = [train(accumulated)["attribute_binding"], train(one_batch)["attribute_binding"]]
    assert [len(r["history"]) for r in runs] == [2, 2]
    a, b = (RewardModel.from_pretrained(tmp_path / name / "attribute_binding") for name in "ab")
    start = RewardModel.for_shapes_world("attribute_binding", **TINY).state_dict()
    # The pair loss cannot see the head's last bias (it shifts every reward alike): its gradient is rounding noise,
    # which Adam scales to a full step. Everything else agrees to well under one step (lr 3e-3).
    shift = f"head.{len(a.head) - 1}.bias"
    sa, sb = a.state_dict(), b.state_dict()
    assert max((sa[k] - sb[k]).abs().max().item() for k in sa if k != shift) < 2e-4
    assert any((sa[k] - start[k]).abs().max() > 1e-3 for k in sa)  # it did train
    images = torch.rand(6, 3, 32, 32)
    ra, rb = (m.score(images, PROMPTS * 3, normalize=False) for m in (a, b))
    assert torch.allclose(ra - ra.mean(), rb - rb.mean(), atol=1e-4)
    # Per batch the loss is the pair mean, so batches with other pair counts are weighted alike (documented):
    assert all(r["train_pairs"] == 3 * r["train_rankings"] for r in runs)


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", [5, 7])
def test_killed_training_resumes_to_the_weights_of_an_uninterrupted_run(sim_data, tmp_path, kill_at):
    """24 rankings, batches of 4 accumulated by 2: 3 steps per epoch; checkpoints every 2 steps. Killed after
    step 5 it resumes from step 4 (the middle of epoch 1); after step 7, from step 6 (epoch 1's last step,
    before its validation). Dropout and random views make every random stream count."""
    from itercomp.errors import ItercompError
    from reward_models.training import train

    settings = dict(batch_rankings=4, gradient_accumulation_steps=2, dropout=0.1, train_views="shapes_symmetries")
    whole = train(_train_config(sim_data, tmp_path / "whole", **settings))["attribute_binding"]

    def kill(aspect, step):
        if step == kill_at:
            raise Killed

    config = _train_config(sim_data, tmp_path / "cut", checkpoint_every=2, **settings)
    with pytest.raises(Killed):
        train(config, on_step=kill)
    folder = tmp_path / "cut" / "attribute_binding"
    progress = json.loads((folder / "checkpoint" / "progress.json").read_text())
    assert progress["step"] == kill_at - 1 and progress["epoch"] == 1
    with pytest.raises(ItercompError, match="learning_rate"):
        train(
            _train_config(sim_data, tmp_path / "cut", checkpoint_every=2, resume=True, learning_rate=1e-2, **settings)
        )
    # A resumed run may change how it runs (here: no image cache), not what it computes.
    resumed = train(_train_config(sim_data, tmp_path / "cut", checkpoint_every=2, resume=True, image_cache_mb=0,
                                  **settings))["attribute_binding"]  # fmt: skip
    assert not (folder / "checkpoint").exists()  # the folder is the reward model again
    assert [h["val_loss"] for h in resumed["history"]] == pytest.approx([h["val_loss"] for h in whole["history"]])
    assert resumed["best_epoch"] == whole["best_epoch"] and len(resumed["history"]) == 3
    a = RewardModel.from_pretrained(tmp_path / "whole" / "attribute_binding").state_dict()
    b = RewardModel.from_pretrained(folder).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert resumed["processes"][0]["weights"] == whole["processes"][0]["weights"]  # the last weights, bit for bit
    # Resuming a finished run keeps it.
    again = train(_train_config(sim_data, tmp_path / "cut", checkpoint_every=2, resume=True, **settings))
    assert again["attribute_binding"]["history"] == resumed["history"]


def test_image_cache_is_bounded_and_changes_nothing(sim_data):
    from reward_models.data import ImageCache, RankingDataset

    data = RankingFile.read(sim_data)
    rankings = data.select("attribute_binding", "train")
    for size in (32, 24):  # the images' own size, and resized (rounded back to uint8 whether cached or not)
        caches = {"none": None, "small": ImageCache(0.01), "zero": ImageCache(0), "large": ImageCache(1024)}
        items = {name: [RankingDataset(rankings, data.root, size, cache)[i]["images"] for i in range(len(rankings))]
                 for name, cache in caches.items()}  # fmt: skip
        again = [RankingDataset(rankings, data.root, size, caches["small"])[i]["images"] for i in range(len(rankings))]
        for name in ("small", "zero", "large"):
            assert all(torch.equal(x, y) for x, y in zip(items["none"], items[name]))
        assert all(torch.equal(x, y) for x, y in zip(items["none"], again))
        image_bytes = 3 * size * size
        small = caches["small"]
        assert small.bytes <= small.limit_bytes == int(0.01 * 2**20) and len(small) == small.limit_bytes // image_bytes
        assert caches["zero"].bytes == 0 and len(caches["zero"]) == 0
        unique = {c.path for r in rankings for c in r.candidates}
        assert len(caches["large"]) == len(unique) and caches["large"].bytes == len(unique) * image_bytes
        assert all(image.dtype == torch.uint8 for image in caches["large"]._images.values())
    from reward_models.data import load_image

    first = data.root / rankings[0].candidates[0].path
    assert torch.equal(RankingDataset(rankings[:1], data.root, 32)[0]["images"][0], load_image(first))


def imagereward_state_dict(vision_layers=2, text_layers=2, width=32, mlp=37, grid=4, patch=6, vocab=99, positions=40):
    """A tiny state dict with ImageReward's key names (ImageReward/ImageReward.py: `blip` = BLIP_Pretrain of
    models/BLIP/blip_pretrain.py with vit.py's VisionTransformer and med.py's BertModel, then `mlp.layers`)."""
    g = torch.Generator().manual_seed(1)

    def t(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    state = {
        "blip.visual_encoder.cls_token": t(1, 1, width),
        "blip.visual_encoder.pos_embed": t(1, 1 + grid * grid, width),
        "blip.visual_encoder.patch_embed.proj.weight": t(width, 3, patch, patch),
        "blip.visual_encoder.patch_embed.proj.bias": t(width),
        "blip.visual_encoder.norm.weight": 1 + t(width),
        "blip.visual_encoder.norm.bias": t(width),
        "blip.text_encoder.embeddings.position_ids": torch.arange(positions)[None],
        "blip.text_encoder.embeddings.word_embeddings.weight": t(vocab, width),
        "blip.text_encoder.embeddings.position_embeddings.weight": t(positions, width),
        "blip.text_encoder.embeddings.LayerNorm.weight": 1 + t(width),
        "blip.text_encoder.embeddings.LayerNorm.bias": t(width),
        "blip.vision_proj.weight": t(16, width),
        "blip.vision_proj.bias": t(16),
        "blip.text_proj.weight": t(16, width),
        "blip.text_proj.bias": t(16),
    }
    for i in range(vision_layers):
        block = f"blip.visual_encoder.blocks.{i}."
        for name, shape in (("norm1", (width,)), ("norm2", (width,))):
            state[f"{block}{name}.weight"], state[f"{block}{name}.bias"] = 1 + t(*shape), t(*shape)
        for name, out, inp in (("attn.qkv", 3 * width, width), ("attn.proj", width, width), ("mlp.fc1", mlp, width),
                               ("mlp.fc2", width, mlp)):  # fmt: skip
            state[f"{block}{name}.weight"], state[f"{block}{name}.bias"] = t(out, inp), t(out)
    for i in range(text_layers):
        layer = f"blip.text_encoder.encoder.layer.{i}."
        for part in ("attention", "crossattention"):
            for name in ("self.query", "self.key", "self.value", "output.dense"):
                state[f"{layer}{part}.{name}.weight"], state[f"{layer}{part}.{name}.bias"] = t(width, width), t(width)
            state[f"{layer}{part}.output.LayerNorm.weight"] = 1 + t(width)
            state[f"{layer}{part}.output.LayerNorm.bias"] = t(width)
        state[f"{layer}intermediate.dense.weight"], state[f"{layer}intermediate.dense.bias"] = t(mlp, width), t(mlp)
        state[f"{layer}output.dense.weight"], state[f"{layer}output.dense.bias"] = t(width, mlp), t(width)
        state[f"{layer}output.LayerNorm.weight"], state[f"{layer}output.LayerNorm.bias"] = 1 + t(width), t(width)
    dims = (width, 24, 16, 8, 4, 1)  # ImageReward: 768, 1024, 128, 64, 16, 1
    for index, (inp, out) in zip((0, 2, 4, 6, 7), zip(dims[:-1], dims[1:])):
        state[f"mlp.layers.{index}.weight"], state[f"mlp.layers.{index}.bias"] = t(out, inp), t(out)
    return state


def imagereward_vit(state: dict, pixels: torch.Tensor, heads: int = 4, patch: int = 6) -> torch.Tensor:
    """ImageReward's visual encoder (models/BLIP/vit.py: timm's ViT, LayerNorm eps 1e-6) written out."""
    import torch.nn.functional as F

    def p(name):
        return state[f"blip.visual_encoder.{name}"]

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], p(f"{name}.weight"), p(f"{name}.bias"), eps=1e-6)

    x = F.conv2d(pixels, p("patch_embed.proj.weight"), p("patch_embed.proj.bias"), stride=patch).flatten(2).mT
    x = torch.cat([p("cls_token").expand(len(x), -1, -1), x], 1) + p("pos_embed")
    b, n, c = x.shape
    i = 0
    while f"blip.visual_encoder.blocks.{i}.norm1.weight" in state:
        block = f"blocks.{i}."
        qkv = F.linear(norm(x, block + "norm1"), p(block + "attn.qkv.weight"), p(block + "attn.qkv.bias"))
        q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.mT) * (c // heads) ** -0.5).softmax(-1)
        out = (attention @ v).transpose(1, 2).reshape(b, n, c)
        x = x + F.linear(out, p(block + "attn.proj.weight"), p(block + "attn.proj.bias"))
        h = F.gelu(F.linear(norm(x, block + "norm2"), p(block + "mlp.fc1.weight"), p(block + "mlp.fc1.bias")))
        x = x + F.linear(h, p(block + "mlp.fc2.weight"), p(block + "mlp.fc2.bias"))
        i += 1
    return norm(x, "norm")


def test_imagereward_checkpoint_maps_onto_the_blip_reward_model(tmp_path):
    from itercomp.errors import ItercompError
    from reward_models.imagereward import IMAGEREWARD_MEAN, IMAGEREWARD_STD, from_imagereward
    from reward_models.imagereward import imagereward_state_dict_to_ours as to_ours
    from reward_models.training import build_model

    backbone = tiny_backbone("blip", tmp_path / "backbone")
    state = imagereward_state_dict()
    ours = to_ours(state)
    qkv = ours["vision.encoder.layers.1.self_attn.qkv.weight"]
    assert torch.equal(qkv, state["blip.visual_encoder.blocks.1.attn.qkv.weight"])
    assert torch.equal(
        ours["text.encoder.layer.0.crossattention.self.key.weight"],
        state["blip.text_encoder.encoder.layer.0.crossattention.self.key.weight"],
    )
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "itercomp_rm.pt")  # IterComp saves from DDP
    torch.save(state, tmp_path / "ImageReward.pt")
    model = from_imagereward(tmp_path / "ImageReward.pt", str(backbone), aspect="spatial_relationship").eval()
    assert model.config.image_size == 24 and model.config.head_hidden == ()  # 4 x 4 patches of 6 px
    assert (model.config.reward_mean, model.config.reward_std) == (IMAGEREWARD_MEAN, IMAGEREWARD_STD)
    assert to_ours(torch.load(tmp_path / "itercomp_rm.pt", weights_only=True)).keys() == ours.keys()
    # The vision tower computes what ImageReward's ViT computes, and the head what its five Linear layers do.
    pixels = torch.randn(2, 3, 24, 24)
    expected = imagereward_vit(state, pixels)
    assert torch.allclose(model.vision(pixel_values=pixels).last_hidden_state, expected, atol=1e-4)
    features = torch.randn(5, 32)
    chain = features
    for i in (0, 2, 4, 6, 7):
        chain = torch.nn.functional.linear(chain, state[f"mlp.layers.{i}.weight"], state[f"mlp.layers.{i}.bias"])
    assert torch.allclose(model.head(features), chain, atol=1e-5)
    images = torch.rand(2, 3, 48, 48)
    model.save_pretrained(tmp_path / "reward")
    loaded = RewardModel.from_pretrained(tmp_path / "reward")
    assert torch.allclose(loaded.score(images, PROMPTS), model.score(images, PROMPTS), atol=1e-5)
    # As a training start (init_from_imagereward), at another image size.
    config = _train_config(
        "r.jsonl", tmp_path / "rm", backbone="blip", backbone_path=str(backbone),
        init_from_imagereward=str(tmp_path / "ImageReward.pt"), image_size=36,
    )  # fmt: skip
    started = build_model(config, "attribute_binding")
    assert started.config.image_size == 36 and started.vision.embeddings.position_embedding.shape == (1, 37, 32)
    assert torch.equal(started.head[0].weight, model.head[0].weight)
    with pytest.raises(ValueError, match="have no place here"):
        to_ours({**state, "blip.itm_head.weight": torch.zeros(2, 32)})
    with pytest.raises(ValueError, match="not an ImageReward-format state dict"):
        to_ours({"vision.weight": torch.zeros(1)})
    with pytest.raises(ItercompError, match="init_from_imagereward needs --backbone blip"):
        _train_config("r.jsonl", tmp_path / "rm", init_from_imagereward="ImageReward.pt")


def test_refine_defaults_per_backbone_are_valid_training_settings():
    from itercomp.errors import ItercompError
    from reward_models.config import BACKBONES, refine_defaults

    assert refine_defaults("shapes") == {"epochs": 4, "learning_rate": 2e-4, "batch_rankings": 16}
    blip = refine_defaults("blip")
    assert (blip["learning_rate"], blip["freeze_ratio"], blip["image_size"]) == (1e-5, 0.7, 224)
    for backbone in BACKBONES:
        defaults = refine_defaults(backbone)
        path = None if backbone == "shapes" else "some/backbone"
        config = RewardTrainConfig(rankings="r", output_dir="o", backbone=backbone, backbone_path=path, **defaults)
        assert all(getattr(config, k) == v for k, v in defaults.items())
    refine_defaults("blip")["epochs"] = 99  # a fresh dict each call
    assert refine_defaults("blip")["epochs"] == 5
    with pytest.raises(ItercompError, match="backbone='vit' is unknown"):
        refine_defaults("vit")


def test_new_training_options_are_flags_and_checked():
    from itercomp.errors import ItercompError

    argv = ["--rankings", "r", "--output-dir", "o", "--image-size", "224", "--gradient-accumulation-steps", "4"]
    argv += ["--checkpoint-every", "50", "--resume", "--image-cache-mb", "0"]
    config = load_config(RewardTrainConfig, argv)
    assert (config.image_size, config.gradient_accumulation_steps, config.checkpoint_every) == (224, 4, 50)
    assert config.resume is True and config.image_cache_mb == 0
    for field, value in (("gradient_accumulation_steps", 0), ("image_size", 0), ("checkpoint_every", 0),
                         ("image_cache_mb", -1.0)):  # fmt: skip
        with pytest.raises(ItercompError, match=field):
            RewardTrainConfig(rankings="r", output_dir="o", **{field: value})
