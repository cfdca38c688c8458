"""`itercomp pretrain`: data -> language model -> DiT (deep fusion + the two ablations) -> test evaluation.

Every stage writes its output atomically and is skipped when already done; the DiT stages checkpoint every
`checkpoint_every` steps and resume from the last checkpoint, so a killed run continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from tqdm import tqdm
from transformers import AutoTokenizer, LlamaForCausalLM

from itercomp.errors import ItercompError
from itercomp.io import write_json
from itercomp.models.data import mirror_prompt
from itercomp.models.dit import CONDITIONINGS, CompositionDiT
from itercomp.models.language import (
    LanguageModelConfig,
    build_language_model,
    build_tokenizer,
    encode,
    next_token_loss,
    tokenize,
)
from itercomp.models.pipeline import ShapesDiTPipeline
from itercomp.models.training import ema_decay, ema_update, flow_interpolate, flow_loss, sample_timesteps

logger = logging.getLogger(__name__)
# The shipped names of the three conditionings (gallery members).
MEMBER_NAMES = {"deep_fusion": "base", "pooled": "pooled", "last_layer": "last_layer"}


@dataclass
class PretrainConfig:
    output_dir: str = field(default="runs/pretrain", metadata={"help": "where every stage writes its output"})
    seed: int = 0
    num_images: int = field(default=60_000, metadata={"help": "ground-truth training renders (train split)"})
    canvas: int = 32
    # language model
    lm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    lm_steps: int = 1500
    lm_batch_size: int = 128
    lm_lr: float = 3e-3
    # DiT trunk, identical for the three conditionings
    conditionings: tuple[str, ...] = CONDITIONINGS
    hidden_size: int = 128
    num_heads: int = 4
    patch_size: int = 4
    mlp_ratio: float = 3.0
    stem_channels: int = 32
    prediction_type: str = field(default="sample", metadata={"help": "'sample' (x0, as JiT) or 'velocity'"})
    # DiT optimisation
    steps: int = field(default=6000, metadata={"help": "optimizer steps per DiT"})
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 300
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_max_decay: float = 0.999
    caption_dropout: float = field(default=0.1, metadata={"help": "share of empty prompts, for guidance"})
    timestep_mean: float = 0.0
    timestep_std: float = 1.0
    mirror: bool = field(default=True, metadata={"help": "flip images left-right and swap left/right words"})
    checkpoint_every: int = 500
    eval_every: int = 0
    # sampling and evaluation
    num_inference_steps: int = 20
    guidance_scale: float = 3.0
    shift: float = 1.0

    def __post_init__(self):
        unknown = [c for c in self.conditionings if c not in CONDITIONINGS]
        if unknown:
            raise ItercompError(f"unknown conditioning {unknown}; choose from {', '.join(CONDITIONINGS)}")
        if self.steps < 1 or self.batch_size < 1:
            raise ItercompError("--steps and --batch-size must be >= 1")
        if isinstance(self.lm, dict):
            self.lm = LanguageModelConfig(**self.lm)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup, then cosine decay to `min_lr_ratio` of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---- stage: language model ----------------------------------------------------------------------------------


def train_language_model(cfg: PretrainConfig, prompts: list[str], out: Path) -> tuple:
    if (out / "done").is_file():
        return AutoTokenizer.from_pretrained(out / "tokenizer"), LlamaForCausalLM.from_pretrained(out / "text_encoder")
    tokenizer = build_tokenizer(max_length=cfg.lm.max_length)
    lm = build_language_model(len(tokenizer), cfg.lm, seed=cfg.seed)
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lm_lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed)
    bar = tqdm(range(cfg.lm_steps), desc="language model", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.lm_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.lm_steps))
        batch = tokenize(tokenizer, [prompts[i] for i in rng.integers(len(prompts), size=cfg.lm_batch_size)])
        loss = next_token_loss(lm, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    lm.eval().requires_grad_(False)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp / "tokenizer")
    lm.save_pretrained(tmp / "text_encoder")
    write_json(tmp / "metrics.json", {"final_loss": loss.item(), "steps": cfg.lm_steps})
    (tmp / "done").touch()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return tokenizer, lm


# ---- stage: DiT ---------------------------------------------------------------------------------------------


def build_dit(cfg: PretrainConfig, conditioning: str, lm) -> CompositionDiT:
    return CompositionDiT(
        sample_size=cfg.canvas,
        in_channels=3,
        patch_size=cfg.patch_size,
        hidden_size=cfg.hidden_size,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        text_dim=lm.config.hidden_size,
        num_layers=lm.config.num_hidden_layers,
        stem_channels=cfg.stem_channels,
        conditioning=conditioning,
        prediction_type=cfg.prediction_type,
    )


def make_pipeline(tokenizer, lm, dit, cfg: PretrainConfig) -> ShapesDiTPipeline:
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.shift)
    return ShapesDiTPipeline(tokenizer=tokenizer, text_encoder=lm, transformer=dit, scheduler=scheduler)


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_dit(cfg, conditioning, tokenizer, lm, images, prompts, out: Path, eval_fn=None) -> CompositionDiT:
    """Train one DiT with the given conditioning; resumes from `out/checkpoint.pt`; returns the EMA model."""
    torch.manual_seed(cfg.seed)
    model = build_dit(cfg, conditioning, lm)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    start, history = 0, []
    checkpoint = out / "checkpoint.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["step"], json.loads(state["history"])
        logger.info("resuming %s from step %d", conditioning, start)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"DiT[{conditioning}]: {params / 1e6:.2f}M parameters, {len(images)} images, batch {cfg.batch_size}, "
        f"steps {start}->{cfg.steps} ({cfg.batch_size * cfg.steps / len(images):.1f} epochs)"
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    pixels = to_pixels(images)
    bar = tqdm(range(start, cfg.steps), desc=f"DiT {conditioning}", unit="step", initial=start, total=cfg.steps)
    started = time.perf_counter()
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step])  # per-step stream: resuming replays the same batches
        idx = rng.integers(len(pixels), size=cfg.batch_size)
        x0 = pixels[idx]
        texts = [prompts[i] for i in idx]
        if cfg.mirror:
            flip = rng.random(cfg.batch_size) < 0.5
            x0[flip] = x0[flip].flip(-1)
            texts = [mirror_prompt(t) if f else t for t, f in zip(texts, flip)]
        texts = ["" if d else t for t, d in zip(texts, rng.random(cfg.batch_size) < cfg.caption_dropout)]
        hidden_states, mask = encode(lm, tokenizer, texts)
        t = sample_timesteps(cfg.batch_size, generator, cfg.timestep_mean, cfg.timestep_std)
        noise = torch.randn(x0.shape, generator=generator)
        output = model(flow_interpolate(x0, noise, t), t * 1000, hidden_states, mask)
        loss = flow_loss(output, x0, noise, t, cfg.prediction_type)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, model, ema_decay(step, cfg.ema_max_decay))
        if step % 25 == 0:
            history.append({"step": step, "loss": loss.item(), "grad_norm": grad_norm.item(), "lr": lr_at(step, cfg)})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            state = {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "step": done,
                "history": json.dumps(history),
            }
            torch.save(state, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
        if eval_fn and cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            history.append({"step": done, "eval": eval_fn(ema)})
            print(f"step {done}: {history[-1]['eval']}")
    write_json(out / "history.json", {"history": history, "seconds_this_run": time.perf_counter() - started})
    return ema


def save_member(pipe: ShapesDiTPipeline, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    (tmp / "done").touch()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
