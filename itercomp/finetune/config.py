"""`FeedbackConfig`: every setting of reward-feedback fine-tuning, one named field each (no torch import here,
so the CLI builds its --help without it). The settings of one mode family live in its own section --
`window`, `select`, `dpo`, `grpo` -- nested in YAML (`grpo: {group_size: 8}`) and `section.field=value` on the
command line. `FeedbackRunConfig` adds what the recipe loads: model, rewards, prompts.

Loaded with itercomp.config's loader: YAML keys and `--field value` flags are the field names.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import yaml

from itercomp.accelerators import check_report_to
from itercomp.errors import ItercompError
from itercomp.finetune.modes import MODES, black_box_modes, mode_spec
from itercomp.world.vocab import REWARD_ASPECTS

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine")
DPO_PAIRINGS = ("best_worst", "all")
AWM_OBJECTIVES = ("weighted", "nft")


def _check_positive(section: str, **values) -> None:
    for name, value in values.items():
        if not value > 0 or not math.isfinite(value):
            raise ItercompError(f"{section}.{name} must be a finite number > 0, got {value}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ItercompError(f"{name}={value!r}; use one of {', '.join(choices)}")


def _check_samples(section: str, name: str, value: int) -> None:
    if value < 2:
        raise ItercompError(f"{section}.{name} must be >= 2 to compare samples of a prompt, got {value}; e.g. 4")


def _check_sample_steps(section: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ItercompError(f"{section}.sample_steps must be >= 1 or unset (= num_inference_steps), got {value}")


@dataclass
class WindowConfig:
    """refl / draft / alignprop: sample without gradient, run a late window of steps with gradient, predict x0,
    decode, score, and step on sum_a w_a * relu(reward_hinge - r_a) * reward_loss_scale."""

    grad_step_range: tuple[float, float] = field(
        default=(0.75, 1.0),
        metadata={
            "help": "refl: fractions of num_inference_steps bounding the gradient step; (0.75, 1.0) of 40 steps "
            "is IterComp's step 30..39 (0-based), so the range scales with the step count"
        },
    )
    draft_k: int = field(default=1, metadata={"help": "draft: steps at the end of sampling that run with gradient"})
    alignprop_max_k: int | None = field(
        default=None, metadata={"help": "alignprop: largest truncation K; unset = num_inference_steps"}
    )
    grad_guidance_scale: float | None = field(
        default=None,
        metadata={"help": "guidance in the steps with gradient; unset = guidance_scale (1 halves the memory)"},
    )
    # IterComp's relu(2 - r): normalised rewards above 2 (about 2 std above the training images' mean) stop
    # pulling, so the model is not pushed to exploit a reward model far outside the data it was trained on.
    reward_hinge: float = field(default=2.0, metadata={"help": "rewards above this give no loss (IterComp: 2)"})
    # IterComp's 1e-3: with lr 1e-5 it keeps the reward gradient small next to the weights (matters for SGD,
    # for the balance with the pretraining loss, and under fp16 loss scaling; Adam alone is scale-invariant).
    reward_loss_scale: float = field(default=1e-3, metadata={"help": "multiplies the reward loss (IterComp: 1e-3)"})

    def __post_init__(self):
        self.grad_step_range = tuple(float(v) for v in self.grad_step_range)
        lo, hi = self.grad_step_range if len(self.grad_step_range) == 2 else (None, None)
        if lo is None or not 0 <= lo < hi <= 1:
            raise ItercompError(
                f"window.grad_step_range={list(self.grad_step_range)} must be two fractions 0 <= lo < hi <= 1 of "
                "num_inference_steps, e.g. [0.75, 1.0] for IterComp's steps 30-39 of 40"
            )
        if self.draft_k < 1:
            raise ItercompError(f"window.draft_k must be >= 1, got {self.draft_k}")
        if self.alignprop_max_k is not None and self.alignprop_max_k < 1:
            raise ItercompError(f"window.alignprop_max_k must be >= 1 or unset, got {self.alignprop_max_k}")
        if self.reward_loss_scale < 0 or not math.isfinite(self.reward_loss_scale):
            raise ItercompError(f"window.reward_loss_scale must be a finite number >= 0, got {self.reward_loss_scale}")

    def check(self, config: FeedbackConfig) -> None:
        """What the window needs of the shared settings."""
        steps = config.num_inference_steps
        if config.grad_mode == "draft" and self.draft_k > steps:
            raise ItercompError(f"window.draft_k={self.draft_k} exceeds num_inference_steps={steps}; lower draft_k")
        if self.alignprop_max_k is not None and self.alignprop_max_k > steps:
            raise ItercompError(f"window.alignprop_max_k={self.alignprop_max_k} exceeds num_inference_steps={steps}")


@dataclass
class SelectConfig:
    """select: sample several images per prompt, train the denoising loss on the one the reward scores highest
    (reward-ranked fine-tuning, RAFT)."""

    samples_per_prompt: int = field(default=4, metadata={"help": "images sampled per prompt, ranked by reward"})
    winners: str | None = field(
        default=None,
        metadata={"help": "a rankings.jsonl whose first-ranked images (train prompts) add batch_size (image, prompt) "
                  "pairs to each micro-batch: the gallery's best image per prompt and aspect (in the loop: 'round', "
                  "the round's rankings)"},
    )  # fmt: skip
    online: bool = field(default=True, metadata={"help": "also train on each prompt's best own sample by reward"})

    def __post_init__(self):
        _check_samples("select", "samples_per_prompt", self.samples_per_prompt)

    def check(self, config: FeedbackConfig) -> None:
        if not self.online and not self.winners:
            raise ItercompError("grad_mode=select with select.online=false needs select.winners (a rankings.jsonl)")


@dataclass
class DPOConfig:
    """dpo: Diffusion-DPO on each prompt's best and worst own sample and on ranked pairs of a rankings.jsonl."""

    samples_per_prompt: int = field(
        default=4, metadata={"help": "own images sampled per prompt; the best and the worst by reward make a pair"}
    )
    pairing: str = field(
        default="best_worst",
        metadata={"help": "'best_worst' (one pair per prompt: its best and worst own sample by reward) or 'all' "
                  "(every pair of its own samples whose rewards differ: up to n(n-1)/2 from the same samples, "
                  "for the cost of the loss's passes)"},
    )  # fmt: skip
    beta: float = field(
        default=1000.0, metadata={"help": "inverse temperature on the per-image denoising-error margin"}
    )
    sample_steps: int | None = field(
        default=None,
        metadata={"help": "sampling steps of the own samples (fewer: cheaper pairs; the loss never looks at the "
                  "chain); unset = num_inference_steps"},
    )  # fmt: skip
    timesteps_per_pair: int = field(
        default=1,
        metadata={"help": "(time, noise) draws per pair, the loss averaged over them: more learning per sampled "
                  "pair for the cost of the loss's passes only (Diffusion-DPO: 1)"},
    )  # fmt: skip
    rpo_alpha: float = field(
        default=0.0,
        metadata={"help": "RPO: + rpo_alpha x the preferred images' denoising error (their likelihood), beside "
                  "the DPO loss; 0 = DPO alone"},
    )  # fmt: skip
    preference_pairs: str | None = field(
        default=None,
        metadata={
            "help": "a rankings.jsonl whose ranked images give batch_size (preferred, other) pairs per micro-batch "
            "(the loop passes its rankings); unset = only the current model's own samples"
        },
    )
    online_pairs: bool = field(
        default=True,
        metadata={"help": "also pair each prompt's best and worst of samples_per_prompt own samples by reward"},
    )

    def __post_init__(self):
        _check_samples("dpo", "samples_per_prompt", self.samples_per_prompt)
        _check_positive("dpo", beta=self.beta)
        if self.rpo_alpha < 0:
            raise ItercompError(f"dpo.rpo_alpha must be >= 0 (0 = DPO alone), got {self.rpo_alpha}")
        if self.timesteps_per_pair < 1:
            raise ItercompError(f"dpo.timesteps_per_pair must be >= 1, got {self.timesteps_per_pair}")
        _check_choice("dpo.pairing", self.pairing, DPO_PAIRINGS)
        _check_sample_steps("dpo", self.sample_steps)

    def check(self, config: FeedbackConfig) -> None:
        if not self.online_pairs and not self.preference_pairs:
            raise ItercompError(
                "grad_mode=dpo with dpo.online_pairs=false needs dpo.preference_pairs (a rankings.jsonl); set one "
                "or both"
            )


@dataclass
class AWMConfig:
    """awm: advantage-weighted matching (forward-process feedback, after AWM and DiffusionNFT). Per prompt a group
    of samples drawn in few steps; each sample's denoising loss at fresh timesteps, weighted by its advantage
    within the group: the pretraining objective itself, pushed towards better samples and away from worse ones."""

    group_size: int = field(default=8, metadata={"help": "images sampled per prompt: the group of the advantages"})
    sample_steps: int | None = field(
        default=8,
        metadata={"help": "sampling steps of the groups (few: the loss never looks at the chain); unset = "
                  "num_inference_steps"},
    )  # fmt: skip
    timesteps_per_sample: int = field(
        default=1, metadata={"help": "fresh (time, noise) draws of the denoising loss per sample"}
    )
    advantage_clip: float = field(default=2.0, metadata={"help": "advantages clipped to [-c, c] (in group stds)"})
    objective: str = field(
        default="weighted",
        metadata={"help": "'weighted' (the denoising loss x advantage, AWM) or 'nft' (DiffusionNFT's negative-aware "
                  "implicit policies around the old policy, the run's EMA: a loss with a floor; needs ema_decay > 0 "
                  "and full fine-tuning)"},
    )  # fmt: skip
    negative_weight: float = field(
        default=1.0,
        metadata={"help": "'weighted': scale of the below-average samples' (negative) weights: 1 = symmetric AWM "
                  "(the weights sum to zero per group, measured best), 0 = only better-than-average samples are "
                  "learned (reward-weighted regression)"},
    )  # fmt: skip
    nft_beta: float = field(
        default=1.0,
        metadata={"help": "'nft': the implicit policies' mix (1 - b) v_old + b v and (1 + b) v_old - b v; the "
                  "step from the old policy is at most 1 / b of the way to a sample's target"},
    )  # fmt: skip

    def __post_init__(self):
        _check_samples("awm", "group_size", self.group_size)
        _check_positive("awm", advantage_clip=self.advantage_clip)
        _check_sample_steps("awm", self.sample_steps)
        if self.timesteps_per_sample < 1:
            raise ItercompError(f"awm.timesteps_per_sample must be >= 1, got {self.timesteps_per_sample}")
        _check_choice("awm.objective", self.objective, AWM_OBJECTIVES)
        _check_positive("awm", nft_beta=self.nft_beta)
        if not 0 <= self.negative_weight <= 1:
            raise ItercompError(f"awm.negative_weight must be in [0, 1], got {self.negative_weight}")

    def check(self, config: FeedbackConfig) -> None:
        """nft trains around the run's moving average of every denoiser weight."""
        if self.objective == "nft" and (config.ema_decay <= 0 or config.use_lora):
            raise ItercompError(
                "awm.objective=nft trains around the moving average of the weights (its old policy): set ema_decay "
                "> 0 (e.g. 0.99) and use_lora=false"
            )


@dataclass
class GRPOConfig:
    """grpo: Flow-GRPO -- SDE sampling, group-relative advantages per prompt, a clipped policy loss on the sampled
    steps, optionally a KL to the starting model."""

    group_size: int = field(default=4, metadata={"help": "images sampled per prompt: the group of the advantages"})
    noise_level: float = field(
        default=0.7, metadata={"help": "the SDE's noise level a, std = a sqrt(sigma / (1 - sigma)) (Flow-GRPO)"}
    )
    train_steps: int | None = field(
        default=None,
        metadata={"help": "sampled steps trained per batch, drawn at random; unset = every stochastic step"},
    )
    clip_range: float = field(default=0.2, metadata={"help": "PPO clip range of the probability ratio"})
    kl_beta: float = field(default=0.0, metadata={"help": "weight of the KL to the starting model; 0 = none"})

    def __post_init__(self):
        _check_samples("grpo", "group_size", self.group_size)
        _check_positive("grpo", noise_level=self.noise_level, clip_range=self.clip_range)
        if self.kl_beta < 0 or not math.isfinite(self.kl_beta):
            raise ItercompError(f"grpo.kl_beta must be a finite number >= 0, got {self.kl_beta}")

    def check(self, config: FeedbackConfig) -> None:
        stochastic = config.num_inference_steps - 1
        if self.train_steps is not None and not 1 <= self.train_steps <= stochastic:
            raise ItercompError(
                f"grpo.train_steps={self.train_steps} must be in 1..{stochastic} (the stochastic steps: every "
                "sampling step but the last) or unset for all of them"
            )


@dataclass
class FeedbackConfig:
    """Reward-feedback fine-tuning of a text-to-image denoiser: the shared settings, and one section per mode
    family (`window`, `select`, `dpo`, `grpo`) of which `grad_mode` picks one."""

    # The short names of other stage configs, accepted with a DeprecationWarning for one release. The settings
    # that moved into a mode's section (dpo_beta -> dpo.beta, ...) are listed in docs/finetune.md.
    aliases: ClassVar[dict[str, str]] = {
        "out": "output_dir",
        "lr": "learning_rate",
        "grad_clip": "max_grad_norm",
        "steps": "max_steps",
        "ema_max_decay": "ema_decay",
    }

    output_dir: str = field(
        default="runs/finetune",
        metadata={"help": "writes checkpoint/, pipeline/, lora/ (with use_lora), metrics.json, feedback_config.yaml"},
    )
    # ---- sampling ------------------------------------------------------------------------------------------
    num_inference_steps: int = field(default=40, metadata={"help": "sampling steps per image (IterComp: 40)"})
    guidance_scale: float = field(
        default=1.0, metadata={"help": "classifier-free guidance in the steps without gradient; 1 = none (IterComp)"}
    )
    resolution: int | None = field(
        default=None, metadata={"help": "image height and width in pixels; unset = the pipeline's default"}
    )
    max_sequence_length: int | None = field(
        default=None, metadata={"help": "text tokens for pipelines that take it (SD3, Flux, Sana); unset = theirs"}
    )
    # ---- the mode and its section --------------------------------------------------------------------------
    grad_mode: str = field(
        default="refl",
        metadata={
            "help": "refl: one step drawn from window.grad_step_range, x0 predicted there (ImageReward/IterComp); "
            "draft: the last window.draft_k steps (DRaFT-K); alignprop: the last K steps, K drawn from "
            "1..window.alignprop_max_k; select: train the denoising loss on each prompt's best of "
            "select.samples_per_prompt samples (RAFT); dpo: Diffusion-DPO on each prompt's best and worst sample "
            "and on ranked pairs; grpo: Flow-GRPO -- SDE sampling, group-relative advantages, a clipped policy "
            "loss; awm: the denoising loss on a group's samples weighted by advantage. select, dpo, grpo and awm never "
            "differentiate the reward (the oracle serves them)"
        },
    )
    window: WindowConfig = field(
        default_factory=WindowConfig, metadata={"help": "settings of grad_mode refl, draft and alignprop"}
    )
    select: SelectConfig = field(default_factory=SelectConfig, metadata={"help": "settings of grad_mode select"})
    dpo: DPOConfig = field(default_factory=DPOConfig, metadata={"help": "settings of grad_mode dpo"})
    grpo: GRPOConfig = field(default_factory=GRPOConfig, metadata={"help": "settings of grad_mode grpo"})
    awm: AWMConfig = field(default_factory=AWMConfig, metadata={"help": "settings of grad_mode awm"})
    # ---- reward --------------------------------------------------------------------------------------------
    reward_weights: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(REWARD_ASPECTS, 1.0),
        metadata={
            "help": "weight per reward aspect; every aspect the reward function returns needs one "
            "(YAML mapping, or 'aspect=w,aspect=w' on the command line)"
        },
    )
    # ---- pretraining-loss regulariser ---------------------------------------------------------------------
    pretrain_loss_weight: float = field(
        default=0.0,
        metadata={"help": "weight of the denoising loss on (image, prompt) pairs added to the reward loss; 0 = off"},
    )
    regulariser_data: str | None = field(
        default=None,
        metadata={
            "help": "pairs for the regulariser: 'shapes' (ground-truth renders of train prompts) or a folder with "
            "prompts.jsonl (image + prompt per row, or `itercomp world sample` output) or image files with .txt captions"
        },
    )
    regulariser_samples: int = field(default=2048, metadata={"help": "'shapes': how many renders to draw"})
    pretrain_batch_size: int | None = field(
        default=None, metadata={"help": "regulariser pairs per micro-batch; unset = batch_size"}
    )
    # ---- optimisation --------------------------------------------------------------------------------------
    # IterComp's 1e-5 is for SDXL (recipes/configs/reward_ft_sdxl.yaml sets it); the default is the shapes
    # recipe's and the loop's 1e-4, ten times it for a ~2M-parameter model pretrained at 1e-3.
    learning_rate: float = field(
        default=1e-4, metadata={"help": "AdamW (peak) learning rate (IterComp's SDXL run: 1e-5, constant)"}
    )
    lr_schedule: str = field(
        default="constant",
        metadata={"help": "'constant' (IterComp's) or 'cosine': from learning_rate down to min_lr_ratio x it over "
                  "lr_decay_steps, then held"},
    )  # fmt: skip
    lr_decay_steps: int | None = field(
        default=None,
        metadata={"help": "'cosine': the steps of the decay; unset = max_steps (set it for max_minutes runs)"},
    )
    min_lr_ratio: float = field(default=0.1, metadata={"help": "'cosine': the final learning rate / learning_rate"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay"})
    max_steps: int = field(default=200, metadata={"help": "optimizer steps (IterComp: 200)"})
    max_minutes: float | None = field(
        default=None,
        metadata={"help": "stop (checkpoint, evaluate, save) after the step that passes this many minutes of "
                  "training (the steps' time, counted across resumes), if max_steps is not reached first: runs "
                  "compared at equal CPU time"},
    )  # fmt: skip
    batch_size: int = field(default=4, metadata={"help": "prompts per micro-batch per process"})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "micro-batches per optimizer step (effective batch = this x batch x processes)"}
    )
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "clip the gradient norm to this (IterComp: 1); unset = no clipping"}
    )
    ema_decay: float = field(
        default=0.999,
        metadata={"help": "EMA of the trained weights (warmed up); 0 = no EMA, the last weights are kept"},
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute denoiser activations in backward (memory for time)"}
    )
    mixed_precision: str = field(
        default="no",
        metadata={"help": "no, fp16 or bf16: autocast, frozen modules in that dtype, trained weights fp32"},
    )
    cpu: bool = field(default=False, metadata={"help": "force the CPU (multi-process CPU runs need it)"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads per process"})
    # ---- LoRA ----------------------------------------------------------------------------------------------
    use_lora: bool = field(
        default=False, metadata={"help": "train LoRA adapters (peft) instead of every denoiser weight"}
    )
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha; unset = lora_rank (scale 1)"})
    lora_target_modules: tuple[str, ...] = field(
        default=(), metadata={"help": "module names that get adapters; empty = the attention projections"}
    )
    # ---- bookkeeping ---------------------------------------------------------------------------------------
    seed: int = field(default=0, metadata={"help": "seed of prompts, noise, windows and regulariser batches"})
    eval_prompts: int = field(
        default=16, metadata={"help": "size of the fixed evaluation batch scored before and after training"}
    )
    eval_seed: int = field(default=0, metadata={"help": "evaluation image k uses noise seed eval_seed + k"})
    checkpoint_every: int = field(
        default=50, metadata={"help": "write output_dir/checkpoint every this many steps (0 = only at the end)"}
    )
    resume: bool = field(default=True, metadata={"help": "continue from output_dir/checkpoint if it exists"})
    text_cache_mb: float = field(
        default=1024.0,
        metadata={"help": "keep each prompt's text encoding on the CPU up to this many MiB (frozen text encoders: "
                  "computed once, not every batch); 0 encodes every batch"},
    )  # fmt: skip
    report_to: str = field(
        default="none",
        metadata={"help": "none, tensorboard, wandb or all: losses, rewards, gradient norms and the evaluation "
                  "samples through accelerate's trackers, in output_dir/logs"},
    )  # fmt: skip

    def __post_init__(self):
        spec = mode_spec(self.grad_mode)  # an unknown grad_mode is an error naming the registered ones
        sections = {s.section for s in MODES.values()}
        for f in dataclasses.fields(self):
            if f.name in sections:
                setattr(self, f.name, _section(f.name, f.default_factory, getattr(self, f.name)))
        positive = ("num_inference_steps", "max_steps", "batch_size", "gradient_accumulation_steps", "lora_rank")
        for name in (*positive, "regulariser_samples"):
            if getattr(self, name) < 1:
                raise ItercompError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("resolution", "max_sequence_length", "pretrain_batch_size", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ItercompError(f"{name} must be >= 1 or unset, got {value}")
        getattr(self, spec.section).check(self)
        self.reward_weights = parse_weights(self.reward_weights)
        if not self.reward_weights or all(w == 0 for w in self.reward_weights.values()):
            raise ItercompError("reward_weights gives no aspect a non-zero weight; e.g. attribute_binding=1")
        if self.pretrain_loss_weight < 0 or not math.isfinite(self.pretrain_loss_weight):
            raise ItercompError(f"pretrain_loss_weight must be a finite number >= 0, got {self.pretrain_loss_weight}")
        if self.pretrain_loss_weight > 0 and not self.regulariser_data:
            raise ItercompError(
                f"pretrain_loss_weight={self.pretrain_loss_weight} needs regulariser_data: 'shapes' or a folder of "
                "images with prompts (or pass regulariser_data= to finetune())"
            )
        if not 0 <= self.ema_decay < 1:
            raise ItercompError(f"ema_decay must be in [0, 1) (0 turns the EMA off), got {self.ema_decay}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ItercompError(f"max_grad_norm must be > 0 or unset (no clipping), got {self.max_grad_norm}")
        if self.learning_rate <= 0:
            raise ItercompError(f"learning_rate must be > 0, got {self.learning_rate}")
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.lr_decay_steps is not None and self.lr_decay_steps < 1:
            raise ItercompError(f"lr_decay_steps must be >= 1 or unset (= max_steps), got {self.lr_decay_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ItercompError(
                f"min_lr_ratio must be in [0, 1] (the final learning rate / the peak), got {self.min_lr_ratio}"
            )
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if self.eval_prompts < 0 or self.checkpoint_every < 0:
            raise ItercompError("eval_prompts and checkpoint_every must be >= 0")
        check_report_to(self.report_to)
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ItercompError(f"max_minutes must be > 0 or unset, got {self.max_minutes}")
        self.lora_target_modules = tuple(self.lora_target_modules)

    @property
    def mode_settings(self):
        """The section of the current grad_mode (e.g. `self.grpo` for grad_mode=grpo)."""
        return getattr(self, mode_spec(self.grad_mode).section)

    @property
    def decay_steps(self) -> int:
        """The steps of the cosine decay: lr_decay_steps, or max_steps when it is unset."""
        return self.lr_decay_steps or self.max_steps


def _section(name: str, cls, value):
    """A section given as a mapping (`FeedbackConfig(grpo={"group_size": 8})`) becomes its dataclass, typed and
    checked by the config loader."""
    from itercomp.config import config_from_dict

    return value if isinstance(value, cls) else config_from_dict(cls, value, name)


def parse_weights(value) -> dict[str, float]:
    """reward_weights from a mapping, a YAML/JSON mapping string or 'aspect=w,aspect=w' (the CLI's form)."""
    if isinstance(value, str):
        text = value.strip()
        parsed = yaml.safe_load(text) if text.startswith("{") else None
        if parsed is None:
            parsed = {}
            for item in filter(None, (part.strip() for part in text.split(","))):
                name, sep, weight = item.partition("=")
                if not sep:
                    raise ItercompError(f"reward_weights: {item!r} is not 'aspect=weight'; e.g. attribute_binding=1")
                parsed[name.strip()] = weight
        value = parsed
    if not isinstance(value, dict):
        raise ItercompError(f"reward_weights must map aspect -> weight, got {value!r}")
    try:
        weights = {str(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise ItercompError(f"reward_weights: every weight must be a number, got {value!r}") from None
    negative = [k for k, w in weights.items() if w < 0 or not math.isfinite(w)]
    if negative:
        raise ItercompError(f"reward_weights for {negative} must be finite and >= 0")
    return weights


@dataclass
class FeedbackRunConfig(FeedbackConfig):
    """What `accelerate launch recipes/reward_ft.py` and `itercomp finetune` load before calling finetune()."""

    pretrained: str | None = field(
        default=None,
        metadata={"help": "pipeline folder or hub id to fine-tune; unset = the shipped shapes base model"},
    )
    rewards: str | None = field(
        default=None,
        metadata={"help": "folder with one reward model per aspect; unset = the shipped itercomp/weights/rewards"},
    )
    prompts: str | None = field(
        default=None,
        metadata={
            "help": "prompt file (.txt one per line, or .jsonl with 'prompt'); unset = shapes-world train prompts"
        },
    )
    prompts_per_aspect: int = field(
        default=500, metadata={"help": "shapes-world train prompts per reward aspect when no prompt file is given"}
    )
    reward: str = field(
        default="learned",
        metadata={
            "help": "learned: the reward models in `rewards`; oracle: the shapes world's oracle, a perfect annotator "
            "(the ceiling; only grad_mode select, dpo, grpo or awm, which never differentiate the reward)"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        check_reward_kind(self.reward, self.grad_mode)
        if self.prompts_per_aspect < 1:
            raise ItercompError(f"prompts_per_aspect must be >= 1, got {self.prompts_per_aspect}")


def check_reward_kind(reward: str, grad_mode: str) -> None:
    if reward not in ("learned", "oracle"):
        raise ItercompError(f"reward={reward!r}; use 'learned' (the reward models) or 'oracle' (the shapes world's)")
    if reward == "oracle" and mode_spec(grad_mode).differentiates_reward:
        raise ItercompError(
            f"reward=oracle has no gradient, and grad_mode={grad_mode} differentiates the reward; use grad_mode "
            f"{', '.join(black_box_modes())}"
        )
