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
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from tqdm import tqdm
from transformers import AutoTokenizer, LlamaForCausalLM

from itercomp.errors import ItercompError
from itercomp.io import write_json
from itercomp.models.config import MEMBER_NAMES, PretrainConfig
from itercomp.models.data import mirror_prompt
from itercomp.models.dit import CompositionDiT
from itercomp.models.language import (
    build_language_model,
    build_tokenizer,
    encode,
    next_token_loss,
    tokenize,
)
from itercomp.models.pipeline import ShapesDiTPipeline
from itercomp.models.training import ema_decay, ema_update, flow_interpolate, flow_loss, sample_timesteps

logger = logging.getLogger(__name__)


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
    out.mkdir(parents=True, exist_ok=True)
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
    pixels = to_pixels(images)
    bar = tqdm(range(start, cfg.steps), desc=f"DiT {conditioning}", unit="step", initial=start, total=cfg.steps)
    started = time.perf_counter()
    for step in bar:
        # Per-step streams: a resumed run draws exactly the batches, timesteps and noise of an uninterrupted one.
        rng = np.random.default_rng([cfg.seed, step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
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
        loss = flow_loss(output, x0, noise, t, cfg.prediction_type, cfg.loss_space)
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


# ---- the whole run -------------------------------------------------------------------------------------------


def load_member(path: Path) -> ShapesDiTPipeline:
    return ShapesDiTPipeline.from_pretrained(path, dtype=torch.float32)


def evaluate_members(cfg: PretrainConfig, members: dict[str, Path], out: Path) -> dict:
    """Oracle accuracy per aspect on `eval_prompts` test prompts per aspect x `eval_seeds` seeds, per member."""
    from itercomp.models.evaluate import evaluate_pipeline, evaluation_prompts

    if out.is_file():
        return json.loads(out.read_text())
    prompts = evaluation_prompts(cfg.eval_prompts, "test")
    results = {}
    for name, path in members.items():
        started = time.perf_counter()
        result = evaluate_pipeline(
            load_member(path),
            prompts,
            seeds=range(cfg.eval_seeds),
            num_inference_steps=cfg.num_inference_steps,
            guidance_scale=cfg.guidance_scale,
        )
        results[name] = {**result["summary"], "seconds": round(time.perf_counter() - started, 1)}
        print(f"{name}: " + ", ".join(f"{a} {v['accuracy']:.3f}" for a, v in result["summary"].items()))
    write_json(out, results)
    return results


def run_pretrain(cfg: PretrainConfig) -> dict:
    """data -> language model -> one DiT per conditioning -> test evaluation; each finished stage is skipped."""
    from itercomp.config import save_config
    from itercomp.models.data import load_or_render

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "config.yaml")
    timings_path = root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}

    def timed(stage: str, fn):
        started = time.perf_counter()
        result = fn()
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started
        write_json(timings_path, timings)
        return result

    images, prompts = timed("data", lambda: load_or_render(root / "data.npz", cfg.num_images, cfg.seed, cfg.canvas))
    tokenizer, lm = timed("language_model", lambda: train_language_model(cfg, prompts, root / "lm"))
    members = {}
    for conditioning in cfg.conditionings:
        name = MEMBER_NAMES[conditioning]
        members[name] = root / "members" / name
        if (members[name] / "done").is_file():
            continue

        def stage(conditioning=conditioning, name=name):
            ema = train_dit(cfg, conditioning, tokenizer, lm, images, prompts, root / f"dit_{conditioning}")
            save_member(make_pipeline(tokenizer, lm, ema, cfg), members[name])

        timed(f"dit_{conditioning}", stage)
    results = timed("evaluation", lambda: evaluate_members(cfg, members, root / "eval_test.json"))
    training = sum(v for k, v in timings.items() if k != "evaluation")
    print(f"pretraining took {training / 60:.1f} min (+ {timings.get('evaluation', 0) / 60:.1f} min evaluation)")
    return {"members": {k: str(v) for k, v in members.items()}, "eval": results, "timings": timings}


def export_weights(run_dir: Path, dest: Path, fp16: bool = True) -> list[Path]:
    """Copy a pretraining run's members into `dest` for shipping: the language model and tokenizer once under
    `dest/lm`, each member's DiT and scheduler under `dest/<member>` with relative symlinks to the shared LM (the
    members share it, so shipping three copies would triple the weights), DiT weights stored as fp16."""
    run_dir, dest = Path(run_dir), Path(dest)
    members = sorted(p for p in (run_dir / "members").glob("*") if (p / "done").is_file())
    if not members:
        raise ItercompError(f"{run_dir}/members has no finished member; run 'itercomp pretrain' first")
    dtype = torch.float16 if fp16 else torch.float32
    first = load_member(members[0])
    lm_tmp = dest / "lm.tmp"
    shutil.rmtree(lm_tmp, ignore_errors=True)
    first.tokenizer.save_pretrained(lm_tmp / "tokenizer")
    first.text_encoder.save_pretrained(lm_tmp / "text_encoder")  # fp32: it is read at every prompt
    shutil.rmtree(dest / "lm", ignore_errors=True)
    lm_tmp.rename(dest / "lm")
    written = []
    for path in members:
        pipe = load_member(path)
        tmp = dest / f"{path.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.save_pretrained(tmp)
        pipe.transformer.to(dtype).save_pretrained(tmp / "transformer")
        for part in ("tokenizer", "text_encoder"):
            shutil.rmtree(tmp / part)
            (tmp / part).symlink_to(Path("..") / "lm" / part)
        shutil.rmtree(dest / path.name, ignore_errors=True)
        tmp.rename(dest / path.name)
        written.append(dest / path.name)
    return written
