"""The reward stages' configs (simulated ranking data, training); the YAML + flags loader is `itercomp.config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from itercomp.accelerators import check_report_to
from itercomp.config import load_config, save_config, to_dict  # noqa: F401  (re-exported: the stages' loader)
from itercomp.errors import ItercompError
from itercomp.world.vocab import REWARD_ASPECTS

# Kept here (not in backbones.py or ensemble.py) so the CLI can build its --help without importing torch.
HF_BACKBONES = ("blip", "clip", "siglip")
BACKBONES = ("shapes", *HF_BACKBONES)
AGGREGATES = ("mean_minus_std", "min", "mean")  # how a reward ensemble combines its members
CONTRAST_NAMES = ("shapes_one_edit",)  # the keys of reward_models.ensemble.CONTRASTS
VIEW_NAMES = ("shapes_symmetries",)  # the keys of reward_models.ensemble.VIEWS


@dataclass
class RankingDataConfig:
    """Simulated rankings in the shapes world (true renders, hard negatives, noisy versions; oracle-ranked)."""

    aliases: ClassVar[dict[str, str]] = {"out": "output_dir"}

    output_dir: str = field(metadata={"help": "output folder: images/ and rankings.jsonl go here"})
    aspects: tuple[str, ...] = field(default=REWARD_ASPECTS, metadata={"help": "aspects to rank"})
    train_prompts: int = field(default=600, metadata={"help": "prompts per aspect from the train split"})
    val_prompts: int = field(default=80, metadata={"help": "prompts per aspect from the val split"})
    test_prompts: int = field(default=80, metadata={"help": "prompts per aspect from the test split"})
    candidates: int = field(default=6, metadata={"help": "images per ranking (at most; fewer if the pool is short)"})
    min_score_gap: float = field(default=0.05, metadata={"help": "least oracle-score difference between candidates"})
    noise_temperature: float = field(
        default=0.0, metadata={"help": "Plackett-Luce temperature on oracle scores; 0 ranks exactly by score"}
    )
    pixel_noise: tuple[float, float] = field(
        default=(0.04, 0.15), metadata={"help": "range of Gaussian pixel noise std"}
    )
    canvas: int = field(default=32, metadata={"help": "image size in pixels"})
    seed: int = field(default=0, metadata={"help": "seed of prompts, layouts, edits and noise"})

    def __post_init__(self):
        unknown = [a for a in self.aspects if a not in REWARD_ASPECTS]
        if unknown:
            raise ItercompError(f"aspects {unknown} have no reward model; use {', '.join(REWARD_ASPECTS)}")
        if self.candidates < 2:
            raise ItercompError(f"candidates must be >= 2 to form a pair, got {self.candidates}")
        if not self.noise_temperature >= 0:  # also refuses NaN
            raise ItercompError(
                f"noise_temperature must be >= 0 (0 ranks exactly by score), got {self.noise_temperature}"
            )


@dataclass
class RewardTrainConfig:
    """Train the reward models (one per aspect) on a rankings.jsonl."""

    rankings: str = field(metadata={"help": "rankings.jsonl (candidate paths relative to its folder)"})
    output_dir: str = field(metadata={"help": "writes <output_dir>/<aspect>/ (a reward model) per aspect"})
    aspects: tuple[str, ...] = field(default=REWARD_ASPECTS, metadata={"help": "which aspects to train"})
    backbone: str = field(default="shapes", metadata={"help": f"one of {', '.join(BACKBONES)}"})
    backbone_path: str | None = field(
        default=None, metadata={"help": "hub id or local path of a blip/clip/siglip model"}
    )
    init_from: str | None = field(
        default=None, metadata={"help": "refine existing reward models: a folder with one subfolder per aspect"}
    )
    freeze_ratio: float = field(
        default=0.0, metadata={"help": "fraction of each backbone tower frozen (ImageReward: 0.7)"}
    )
    epochs: int = field(default=30, metadata={"help": "passes over the training rankings"})
    batch_rankings: int = field(default=16, metadata={"help": "rankings per batch per process (all their pairs)"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate (cosine decay)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps with linear warm-up"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    patience: int | None = field(
        default=None, metadata={"help": "stop after this many epochs without a better val loss"}
    )
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop after the epoch that passes this many minutes of training"}
    )
    max_train_rankings: int | None = field(
        default=None, metadata={"help": "use only the first N training rankings per aspect (learning curves)"}
    )
    train_views: str | None = field(
        default=None,
        metadata={"help": "augment each training batch with a random exact symmetry of the world "
                  "(reward_models.ensemble.VIEWS, e.g. shapes_symmetries: mirrors and palette permutations with the "
                  "prompt rewritten to match); the pairs are unchanged, no ranking is added"},
    )  # fmt: skip
    image_size: int | None = field(
        default=None,
        metadata={"help": "pixels the images are resized to (default: the backbone's own, e.g. 384 for "
                  "blip-itm-large-coco, 32 for shapes); a transformers backbone's position embedding is resized to it"},
    )  # fmt: skip
    init_from_imagereward: str | None = field(
        default=None,
        metadata={"help": "blip: start the towers and head from an ImageReward-format checkpoint (ImageReward.pt, or "
                  "an IterComp reward model); --backbone-path gives the BLIP config and tokenizer"},
    )  # fmt: skip
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={"help": "batches per optimiser step; each batch's loss is the mean over its pairs and the step "
                  "averages the batches (effective batch: processes x batch_rankings x this)"},
    )  # fmt: skip
    checkpoint_every: int | None = field(
        default=None,
        metadata={"help": "every N optimiser steps write a resumable checkpoint to <output_dir>/<aspect>/checkpoint/ "
                  "(removed when the aspect finishes)"},
    )  # fmt: skip
    resume: bool = field(
        default=False,
        metadata={"help": "continue from <output_dir>/<aspect>/checkpoint/ where there is one; aspects that finished "
                  "(train_state.json, no checkpoint) are kept"},
    )  # fmt: skip
    image_cache_mb: float = field(
        default=1024.0,
        metadata={"help": "decoded, resized images kept in memory per process (uint8) up to this many MiB; "
                  "beyond it images are read from disk each time"},
    )  # fmt: skip
    seed: int = field(default=0, metadata={"help": "seed of initialisation and shuffling"})
    cpu: bool = field(default=False, metadata={"help": "force the CPU (multi-process CPU runs need it)"})
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16 (GPUs)"})
    report_to: str = field(
        default="none",
        metadata={"help": "none, tensorboard, wandb or all: losses, learning rate and validation through "
                  "accelerate's trackers, in output_dir/logs"},
    )  # fmt: skip
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads per process"})
    width: int = field(default=64, metadata={"help": "shapes backbone: hidden width"})
    image_layers: int = field(default=2, metadata={"help": "shapes backbone: image transformer layers"})
    fusion_layers: int = field(default=3, metadata={"help": "text layers that cross-attend to the image (not BLIP)"})
    heads: int = field(default=4, metadata={"help": "shapes backbone: attention heads"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in the backbone and head"})

    def __post_init__(self):
        unknown = [a for a in self.aspects if a not in REWARD_ASPECTS]
        if unknown:
            raise ItercompError(f"aspects {unknown} have no reward model; choose from {', '.join(REWARD_ASPECTS)}")
        check_report_to(self.report_to)
        if self.backbone not in BACKBONES:
            raise ItercompError(f"backbone={self.backbone!r} is unknown; use one of {', '.join(BACKBONES)}")
        if self.backbone in HF_BACKBONES and not self.backbone_path and not self.init_from:
            raise ItercompError(f"backbone={self.backbone} needs --backbone-path (a hub id or a local folder)")
        for name in ("epochs", "batch_rankings", "gradient_accumulation_steps", "image_size", "checkpoint_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ItercompError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.image_cache_mb >= 0:  # also refuses NaN
            raise ItercompError(
                f"image_cache_mb must be >= 0 (0 reads every image from disk), got {self.image_cache_mb}"
            )
        if self.init_from_imagereward:
            if self.backbone != "blip" or not self.backbone_path:
                raise ItercompError(
                    f"init_from_imagereward needs --backbone blip and --backbone-path (the BLIP config and tokenizer, "
                    f"e.g. Salesforce/blip-itm-large-coco), got backbone={self.backbone!r}, "
                    f"backbone_path={self.backbone_path!r}"
                )
            if self.init_from:
                raise ItercompError("init_from and init_from_imagereward both set; give one starting point")
        if self.train_views is not None and self.train_views not in VIEW_NAMES:
            raise ItercompError(
                f"train_views={self.train_views!r} is unknown; use {', '.join(VIEW_NAMES)} or leave it unset"
            )
        if not 0 <= self.freeze_ratio <= 1:
            raise ItercompError(f"freeze_ratio must be in [0, 1], got {self.freeze_ratio}")


# Settings that may differ when a run is resumed: how far to go and how to run, not what is computed.
RESUMABLE = ("aspects", "resume", "checkpoint_every", "max_minutes", "patience", "threads", "image_cache_mb")


def refine_defaults(backbone: str) -> dict:
    """RewardTrainConfig settings for refining a backbone's reward models in the iterative loop (each round starts
    from the previous round's models and trains on the grown rankings). A batch is whole rankings, so IterComp's
    pair counts are translated at its six-image rankings (15 pairs each)."""
    if backbone == "shapes":
        # The shipped shapes models agree with the oracle on ~90% of pairs: a fifth of the from-scratch learning
        # rate and a few epochs keep them close to where they start.
        return {"epochs": 4, "learning_rate": 2e-4, "batch_rankings": 16}
    if backbone == "blip":
        # IterComp's scripts/train_reward_models.sh (ImageReward's train/scripts/train_one_node.sh alike): lr 1e-5
        # cosine without warm-up, 70% of each tower frozen, BLIP ViT-L at 224 px (train/config/config.yaml), Adam
        # without weight decay, 5 epochs, 64 pairs x 4 accumulation x 4 GPUs = 1,024 pairs per step; here
        # 4 rankings x 4 accumulation x 4 processes = 64 rankings (~960 pairs).
        return {
            "epochs": 5,
            "learning_rate": 1e-5,
            "freeze_ratio": 0.7,
            "image_size": 224,
            "batch_rankings": 4,
            "gradient_accumulation_steps": 4,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
        }
    if backbone in ("clip", "siglip"):
        # A pretrained pair of towers under new cross-attention blocks and a new head, as ImageReward's BLIP
        # under a new MLP: ImageReward's lr 1e-5 and 4 x 4 accumulated batch (train/scripts/train_one_node.sh).
        # Freezing half of each tower follows HPSv2 (CLIP ViT-H/14: hpsv2/configs/HPSv2.sh unlocks the last 20
        # of 32 image blocks and the last 11 of 24 text layers); the image size stays the backbone's own (224
        # for CLIP ViT-L/14 and SigLIP base patch16-224).
        return {
            "epochs": 5,
            "learning_rate": 1e-5,
            "freeze_ratio": 0.5,
            "batch_rankings": 4,
            "gradient_accumulation_steps": 4,
        }
    raise ItercompError(f"backbone={backbone!r} is unknown; use one of {', '.join(BACKBONES)}")
