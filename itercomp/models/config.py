"""The base model's pretraining config (torch-free, so the CLI builds its --help without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from itercomp.errors import ItercompError

CONDITIONINGS = ("deep_fusion", "last_layer", "pooled")
# The shipped names of the three conditionings (gallery members).
MEMBER_NAMES = {"deep_fusion": "base", "pooled": "pooled", "last_layer": "last_layer"}


@dataclass
class PretrainConfig:
    """`itercomp pretrain`: the language model, then one DiT per conditioning, on ground-truth train renders."""

    aliases: ClassVar[dict[str, str]] = {
        "lr": "learning_rate",
        "steps": "max_steps",
        "grad_clip": "max_grad_norm",
        "ema_max_decay": "ema_decay",
        "stochastic_sampling": "sampler_eta",  # true is eta 1
    }

    output_dir: str = field(default="runs/pretrain", metadata={"help": "where every stage writes its output"})
    seed: int = field(default=0, metadata={"help": "seed of data, initialisation and batches"})
    num_images: int = field(default=40_000, metadata={"help": "ground-truth training renders (train split)"})
    canvas: int = field(default=32, metadata={"help": "image size in pixels"})
    streaming: bool = field(
        default=False,
        metadata={
            "help": "render every training image fresh (no fixed dataset of num_images; the LM encodes each batch), "
            "with the one-object curriculum and converse captions below"
        },
    )
    single_object_start: float = field(
        default=1.0, metadata={"help": "streaming: share of one-object scenes at the first step (the curriculum)"}
    )
    single_object_end: float = field(
        default=0.3, metadata={"help": "streaming: share of one-object scenes once the curriculum has annealed"}
    )
    curriculum_steps: int = field(
        default=0, metadata={"help": "streaming: steps over which the one-object share falls linearly (0: at once)"}
    )
    converse_captions: float = field(
        default=0.0,
        metadata={
            "help": "streaming: probability of captioning a relation from its other object ('A left of B' as "
            "'B right of A', 'A and B' as 'B and A') when that caption is in the train split too"
        },
    )
    # language model (a tiny Llama; the DiT gets one block per LM layer)
    lm_hidden_size: int = field(default=128, metadata={"help": "language model width"})
    lm_layers: int = field(default=6, metadata={"help": "language model layers (= DiT blocks)"})
    lm_heads: int = field(default=4, metadata={"help": "language model attention heads"})
    lm_intermediate_size: int = field(default=384, metadata={"help": "language model MLP width"})
    lm_steps: int = field(default=300, metadata={"help": "next-token-prediction steps on train captions"})
    lm_batch_size: int = field(default=128, metadata={"help": "captions per language-model step"})
    lm_lr: float = field(default=3e-3, metadata={"help": "language model peak learning rate (cosine)"})
    # DiT trunk, identical for the three conditionings
    conditionings: tuple[str, ...] = field(
        default=CONDITIONINGS, metadata={"help": f"which DiTs to train: {', '.join(CONDITIONINGS)}"}
    )
    hidden_size: int = field(default=128, metadata={"help": "DiT width"})
    num_heads: int = field(default=4, metadata={"help": "DiT attention heads"})
    mlp_ratio: float = field(default=3.0, metadata={"help": "DiT MLP width / hidden size"})
    conv_channels: tuple[int, ...] = field(
        default=(16, 32),
        metadata={
            "help": "U-Net levels around the transformer: conv channels per halving of the resolution (16 32: "
            "convolutions at 32 and 16 px, attention on the 8 x 8 grid)"
        },
    )
    text_whitening: bool = field(
        default=False,
        metadata={"help": "whiten each LM layer's states with their mean and covariance over the training captions"},
    )
    prediction_type: str = field(default="sample", metadata={"help": "'sample' (x0, as JiT) or 'velocity'"})
    loss_space: str = field(
        default="x0", metadata={"help": "'x0' (weights high noise: layout) or 'velocity' (weights fine detail)"}
    )
    # DiT optimisation
    max_steps: int = field(default=3000, metadata={"help": "optimizer steps per DiT"})
    batch_size: int = field(default=16, metadata={"help": "images per DiT step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "DiT peak learning rate (warmup, then cosine)"})
    warmup_steps: int = field(default=100, metadata={"help": "linear learning-rate warmup steps"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final learning rate / peak"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient-norm clipping"})
    ema_decay: float = field(
        default=0.999, metadata={"help": "EMA decay of the weights that are shipped (warmed up from 0)"}
    )
    mixed_precision: str = field(
        default="no",
        metadata={
            "help": "'no' or 'bf16': autocast the DiT's forward pass to bfloat16 (weights, optimiser and loss stay "
            "fp32); a step runs 14 percent faster on this CPU (bench/train_step.py)"
        },
    )
    caption_dropout: float = field(default=0.1, metadata={"help": "share of empty prompts, for guidance"})
    timestep_mean: float = field(default=0.0, metadata={"help": "logit-normal timestep location"})
    timestep_std: float = field(default=1.0, metadata={"help": "logit-normal timestep scale"})
    mirror: bool = field(default=True, metadata={"help": "flip images left-right and swap left/right words"})
    checkpoint_every: int = field(default=250, metadata={"help": "DiT checkpoint interval (steps); resume point"})
    sitting_minutes: float = field(
        default=0.0,
        metadata={
            "help": "stop each DiT after this many minutes of training with a checkpoint (a sitting); continue "
            "later with --resume (0: train to the end)"
        },
    )
    eval_every: int = field(
        default=0,
        metadata={"help": "denoising probe (x0 error, oracle accuracy, caption gap per noise level) every N steps"},
    )
    # sampling and evaluation
    layout_expert_steps: int = field(
        default=0,
        metadata={
            "help": "steps of the layout expert, a second DiT for the noise levels >= layout_boundary trained on the "
            "captions' mean renders, added to the deep-fusion member after its DiT (0: none)"
        },
    )
    layout_boundary: float = field(
        default=0.9,
        metadata={"help": "the noise level from which the layout expert predicts (the sampler's first steps)"},
    )
    layout_captions: int = field(
        default=8000, metadata={"help": "stream captions (each with its mirror) whose mean renders the expert learns"}
    )
    layout_renders: int = field(default=16, metadata={"help": "renders per caption in its mean image"})
    num_inference_steps: int = field(default=20, metadata={"help": "sampler steps of the shipped pipelines"})
    guidance_scale: float = field(default=3.0, metadata={"help": "classifier-free guidance of evaluation"})
    shift: float = field(default=1.0, metadata={"help": "timestep shift of the flow-matching scheduler"})
    sampler_eta: float = field(
        default=0.0,
        metadata={
            "help": "share of each sampler step's noise drawn fresh (DDIM's eta for flow matching): 0 follows the "
            "ODE, 1 re-noises the x0 estimate with fresh noise (diffusers' stochastic_sampling)"
        },
    )
    sampler_eta_below: float = field(
        default=1.0,
        metadata={
            "help": "fresh noise only on the sampler steps that end below this noise level (1: every step); the "
            "steps above follow the ODE and keep the layout the first steps drew"
        },
    )
    eval_prompts: int = field(default=100, metadata={"help": "test prompts per aspect in the final evaluation"})
    eval_seeds: int = field(default=1, metadata={"help": "seeds per test prompt in the final evaluation"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)"})
    parallel: int = field(
        default=3, metadata={"help": "train this many DiTs at once, one single-threaded process each"}
    )

    def __post_init__(self):
        unknown = [c for c in self.conditionings if c not in CONDITIONINGS]
        if unknown:
            raise ItercompError(f"unknown conditioning {unknown}; choose from {', '.join(CONDITIONINGS)}")
        for name in ("max_steps", "batch_size", "num_images", "lm_steps", "eval_prompts", "eval_seeds", "layout_captions",
                     "layout_renders"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ItercompError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prediction_type not in ("sample", "velocity"):
            raise ItercompError(f"prediction_type={self.prediction_type!r}; use 'sample' (x0) or 'velocity'")
        if self.loss_space not in ("x0", "velocity"):
            raise ItercompError(f"loss_space={self.loss_space!r}; use 'x0' or 'velocity'")
        if self.mixed_precision not in ("no", "bf16"):
            raise ItercompError(f"mixed_precision={self.mixed_precision!r}; use 'no' or 'bf16'")
        if self.layout_expert_steps < 0:
            raise ItercompError(
                f"layout_expert_steps must be >= 0 (0: no layout expert), got {self.layout_expert_steps}"
            )
        if not 0.0 < self.layout_boundary <= 1.0:
            raise ItercompError(f"layout_boundary must be a noise level in (0, 1], got {self.layout_boundary}")
        for name in ("single_object_start", "single_object_end", "converse_captions"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ItercompError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not self.conv_channels or self.canvas % 2 ** len(self.conv_channels):
            raise ItercompError(
                f"conv_channels={list(self.conv_channels)}: give at least one level, and a canvas ({self.canvas} px) "
                f"that halves {len(self.conv_channels)} times into a whole token grid"
            )

    @property
    def lm(self):
        from itercomp.models.language import LanguageModelConfig

        return LanguageModelConfig(
            hidden_size=self.lm_hidden_size,
            num_layers=self.lm_layers,
            num_heads=self.lm_heads,
            intermediate_size=self.lm_intermediate_size,
        )
