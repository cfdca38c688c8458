"""The reward model: image encoder -> text encoder cross-attending to the image tokens -> MLP -> one scalar.

The ImageReward design that IterComp uses, with interchangeable backbones (see backbones.py). It is a
diffusers `ModelMixin` + `ConfigMixin`, like the base model it scores for: `save_pretrained` writes
`config.json` + `diffusion_pytorch_model.safetensors` + the tokenizer files; `from_pretrained` rebuilds the
architecture from the config alone (the transformers backbone config is stored inside it), so a saved reward
model loads offline and never touches the hub. The config also carries the reward mean/std measured on the
training images, so `score(..., normalize=True)` gives rewards on a comparable scale across aspects.
"""

from __future__ import annotations

import os

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from reward_models.backbones import (
    IMAGE_MEAN,
    IMAGE_STD,
    CrossBlock,
    ShapesImageEncoder,
    ShapesTextEmbedding,
    build_hf_towers,
    load_hf_backbone,
    phrase_slots,
    resize_vision_state,
    tower_stages,
    with_image_size,
)
from reward_models.config import BACKBONES, HF_BACKBONES
from reward_models.preprocess import preprocess

# How the text states become one reward: "first" token ([CLS]), "mean" of the states then the head, or the
# head on every token then the mean ("token_head"). BLIP always uses its [CLS] token, as ImageReward.
POOLINGS = ("token_head", "mean", "first")


class RewardModel(ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        backbone: str = "shapes",
        backbone_config: dict | None = None,
        aspect: str | None = None,
        image_size: int = 32,
        image_mean: tuple[float, float, float] = IMAGE_MEAN["shapes"],
        image_std: tuple[float, float, float] = IMAGE_STD["shapes"],
        max_text_length: int = 32,
        vocab_size: int = 64,
        width: int = 64,
        image_layers: int = 2,
        fusion_layers: int = 3,
        heads: int = 4,
        dropout: float = 0.0,
        head_hidden: tuple[int, ...] = (128, 32),
        pooling: str = "token_head",
        colour_prior: float = 4.0,
        reward_mean: float = 0.0,
        reward_std: float = 1.0,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone={backbone!r} is unknown; use one of {', '.join(BACKBONES)}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is unknown; use one of {', '.join(POOLINGS)}")
        if reward_std <= 0:
            raise ValueError(f"reward_std must be > 0, got {reward_std}")
        self.tokenizer = None  # attached by from_pretrained / from_backbone / the shapes default
        if backbone == "shapes":
            self.vision = ShapesImageEncoder(width, image_layers, heads, dropout)
            self.text = ShapesTextEmbedding(vocab_size, max_text_length, width)
            from reward_models.tokenizer import world_vocab

            # A colour word starts out reading its own colour slot (a learnable prior, not a hard rule):
            # from scratch, discovering this binding alone took hundreds of steps on a plateau.
            self._words = {i: w for w, i in world_vocab().items()}
            self.colour_prior_scale = nn.Parameter(torch.tensor(float(colour_prior)))
            text_width, image_width, fusion_heads = width, width, heads
        else:
            if backbone_config is None:
                raise ValueError(
                    f"backbone={backbone!r} needs backbone_config; build it with RewardModel.from_backbone"
                )
            self.vision, self.text = build_hf_towers(backbone, backbone_config)
            text_width, image_width = self.text.config.hidden_size, self.vision.config.hidden_size
            fusion_heads = self.text.config.num_attention_heads
        # BLIP's text model cross-attends by itself; the other text sides get CrossBlocks on top.
        self.fusion = nn.ModuleList(
            []
            if backbone == "blip"
            else [CrossBlock(text_width, fusion_heads, dropout=dropout) for _ in range(fusion_layers)]
        )
        self.image_proj = (
            nn.Identity() if image_width == text_width or backbone == "blip" else nn.Linear(image_width, text_width)
        )
        dims = [text_width, *head_hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU(), nn.Dropout(dropout)]
        self.head = nn.Sequential(*layers, nn.Linear(dims[-1], 1))
        self.text_norm = nn.Identity() if backbone == "blip" else nn.LayerNorm(text_width)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def for_shapes_world(cls, aspect: str | None = None, **overrides) -> RewardModel:
        """A fresh (untrained) reward model with the built-in shapes backbone and the world's tokenizer."""
        from reward_models.tokenizer import build_world_tokenizer

        tokenizer = build_world_tokenizer(overrides.get("max_text_length", 32))
        model = cls(backbone="shapes", aspect=aspect, vocab_size=len(tokenizer), **overrides)
        model.tokenizer = tokenizer
        return model

    @classmethod
    def from_backbone(
        cls, backbone: str, name_or_path: str, aspect: str | None = None, image_size: int | None = None, **overrides
    ) -> RewardModel:
        """A reward model on a pretrained BLIP / CLIP / SigLIP (hub id or local path); the head starts fresh.
        `image_size` (default: the vision tower's own) resamples the position embedding to that size."""
        config, vision, text, tokenizer = load_hf_backbone(backbone, name_or_path)
        vision_state = vision.state_dict()
        image_size = image_size or vision.config.image_size
        if image_size != vision.config.image_size:
            config = with_image_size(backbone, config, image_size)
            vision_state = resize_vision_state(backbone, vision_state, config)
        defaults = {"image_size": image_size, "image_mean": IMAGE_MEAN[backbone], "image_std": IMAGE_STD[backbone]}
        defaults["max_text_length"] = 35 if backbone == "blip" else text.config.max_position_embeddings
        model = cls(backbone=backbone, backbone_config=config, aspect=aspect, **{**defaults, **overrides})
        model.vision.load_state_dict(vision_state)
        model.text.load_state_dict(text.state_dict())
        model.tokenizer = tokenizer
        return model

    def resized(self, image_size: int) -> RewardModel:
        """This model reading `image_size` x `image_size` images: the shapes backbone takes any size as it is; a
        transformers vision tower is rebuilt for that size with its position embedding resampled (bicubic), so
        the saved model records the size and loads back at it. Returns self when the size is already that."""
        if image_size == self.config.image_size:
            return self
        if self.config.backbone == "shapes":
            self.register_to_config(image_size=image_size)
            return self
        backbone_config = with_image_size(self.config.backbone, self.config.backbone_config, image_size)
        model = (
            type(self)
            .from_config({**self.config, "image_size": image_size, "backbone_config": backbone_config})
            .to(device=self.device, dtype=self.dtype)
        )
        vision = resize_vision_state(self.config.backbone, self.vision.state_dict(), backbone_config)
        model.load_state_dict({**self.state_dict(), **{f"vision.{k}": v for k, v in vision.items()}})
        model.tokenizer = self.tokenizer
        return model

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, subfolder: str | None = None, **kwargs) -> RewardModel:
        from transformers import AutoTokenizer

        # Non-persistent buffers of transformers towers (e.g. CLIP's position ids) must not stay on `meta`.
        kwargs.setdefault("low_cpu_mem_usage", False)
        model = super().from_pretrained(path, subfolder=subfolder, **kwargs)
        folder = os.path.join(path, subfolder) if subfolder else path
        model.tokenizer = AutoTokenizer.from_pretrained(folder)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        if self.tokenizer is None:
            raise ValueError("this reward model has no tokenizer; attach one (model.tokenizer = ...) before saving")
        super().save_pretrained(save_directory, **kwargs)
        self.tokenizer.save_pretrained(save_directory)

    # ---- training helpers ---------------------------------------------------------------------------------
    def freeze_backbone(self, ratio: float) -> int:
        """Freeze the first `ratio` of each tower's stages (ImageReward freezes 70%); returns #frozen tensors."""
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"freeze_ratio must be in [0, 1], got {ratio}")
        frozen = 0
        for tower in (self.vision, self.text):
            stages = tower_stages(tower)
            for stage in stages[: round(ratio * len(stages))]:
                for p in stage.parameters():
                    p.requires_grad_(False)
                    frozen += 1
        return frozen

    def set_reward_stats(self, mean: float, std: float) -> None:
        self.register_to_config(reward_mean=float(mean), reward_std=float(max(std, 1e-6)))

    # ---- scoring ------------------------------------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        if self.tokenizer is None:
            raise ValueError("this reward model has no tokenizer; load it with RewardModel.from_pretrained(dir)")
        batch = self.tokenizer(
            list(prompts),
            padding="max_length" if self.config.backbone == "siglip" else True,  # SigLIP was trained on padded text
            truncation=True,
            max_length=self.config.max_text_length,
            return_tensors="pt",
        )
        return {
            "input_ids": batch["input_ids"].to(self.device),
            "attention_mask": batch["attention_mask"].to(self.device),
        }

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw rewards, one per image: images B x 3 x H x W in [0, 1] (any size), tokens B x L."""
        cfg = self.config
        pixels = preprocess(images, cfg.image_size, cfg.image_mean, cfg.image_std).to(self.dtype)
        if cfg.backbone == "shapes":
            image_tokens = self.vision(pixels)
        else:
            image_tokens = self.vision(pixel_values=pixels).last_hidden_state
        image_tokens = self.image_proj(image_tokens)
        if cfg.backbone == "blip":
            out = self.text(
                input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_tokens, is_decoder=False
            )
            pooled = out.last_hidden_state[:, 0]  # [CLS], as ImageReward
        else:
            text = (
                self.text(input_ids)
                if cfg.backbone == "shapes"
                else self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            )
            padding = attention_mask == 0
            bias = self.colour_bias(input_ids, image_tokens.shape[1]) if cfg.backbone == "shapes" else None
            for block in self.fusion:
                text = block(text, padding, image_tokens, bias)
            text = self.text_norm(text)
            if cfg.pooling == "first":
                pooled = text[:, 0]
            elif cfg.pooling == "token_head":
                # Each word is judged on what it read from the image, then the verdicts are averaged: the
                # oracle's own structure (a mean over predicates), and no cross-talk between words.
                keep = attention_mask.to(text.dtype)
                per_word = self.head(text).squeeze(-1)
                return (per_word * keep).sum(1) / keep.sum(1).clamp(min=1)
            else:
                keep = attention_mask.unsqueeze(-1).to(text.dtype)
                pooled = (text * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.head(pooled).squeeze(-1)

    def colour_bias(self, input_ids: torch.Tensor, slots: int) -> torch.Tensor:
        """B x heads x L x slots cross-attention prior (`colour_prior` where a word is about a slot's colour):
        phrase words look at their object's colour slot; relation words at the subject's slot in even heads
        and at the object's slot in odd heads (see backbones.phrase_slots)."""
        firsts, seconds = [], []
        for row in input_ids.tolist():
            first, second = phrase_slots([self._words.get(i, "") for i in row])
            firsts.append(first)
            seconds.append(second)
        heads = self.config.heads
        which = torch.tensor([firsts, seconds], device=input_ids.device)  # 2 x B x L
        per_head = which[torch.arange(heads, device=input_ids.device) % 2]  # heads x B x L
        match = per_head.transpose(0, 1)[..., None] == torch.arange(slots, device=input_ids.device)
        return match.to(self.colour_prior_scale.dtype) * self.colour_prior_scale

    def score(self, images: torch.Tensor, prompts: list[str], normalize: bool = True) -> torch.Tensor:
        """Differentiable rewards for a batch (B images, B prompts); normalised with the stored mean/std."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts; pass one prompt per image")
        rewards = self(images.to(self.device), **self.tokenize(prompts))
        if normalize:
            rewards = (rewards - self.config.reward_mean) / self.config.reward_std
        return rewards


__all__ = ["HF_BACKBONES", "RewardModel"]
