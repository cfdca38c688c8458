"""`itercomp pretrain`: data -> language model -> DiT (deep fusion + the two ablations) -> test evaluation.

Every stage writes its output atomically and is skipped when already done; the DiT stages checkpoint every
`checkpoint_every` steps and resume from the last checkpoint, so a killed run continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer, LlamaForCausalLM

from itercomp.errors import ItercompError
from itercomp.io import atomic_dir, atomic_open, write_json
from itercomp.models.config import MEMBER_NAMES, PretrainConfig
from itercomp.models.data import mirror_prompt, render_batch, sample_captions, single_object_share
from itercomp.models.dit import CompositionDiT, whitening_from_covariance
from itercomp.models.language import (
    build_language_model,
    build_tokenizer,
    encode,
    next_token_loss,
    tokenize,
)
from itercomp.models.pipeline import ShapesDiTPipeline
from itercomp.models.scheduler import FlowMatchEtaScheduler, fresh_noise
from itercomp.models.training import (
    ema_decay,
    ema_update,
    flow_interpolate,
    flow_loss,
    sample_timesteps,
)
from itercomp.schedules import cosine_factor

logger = logging.getLogger(__name__)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup, then cosine decay to `min_lr_ratio` of the peak."""
    return cfg.learning_rate * cosine_factor(step, cfg.max_steps, cfg.warmup_steps, floor=cfg.min_lr_ratio)


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
            group["lr"] = cfg.lm_lr * cosine_factor(step, cfg.lm_steps)
        batch = tokenize(tokenizer, [prompts[i] for i in rng.integers(len(prompts), size=cfg.lm_batch_size)])
        loss = next_token_loss(lm, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    lm.eval().requires_grad_(False)
    with atomic_dir(out) as tmp:
        tokenizer.save_pretrained(tmp / "tokenizer")
        lm.save_pretrained(tmp / "text_encoder")
        write_json(tmp / "metrics.json", {"final_loss": loss.item(), "steps": cfg.lm_steps})
        (tmp / "done").touch()
    return tokenizer, lm


# ---- stage: DiT ---------------------------------------------------------------------------------------------


def build_dit(cfg: PretrainConfig, conditioning: str, lm) -> CompositionDiT:
    return CompositionDiT(
        sample_size=cfg.canvas,
        in_channels=3,
        conv_channels=tuple(cfg.conv_channels),
        hidden_size=cfg.hidden_size,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        num_layers=lm.config.num_hidden_layers,
        text_dim=lm.config.hidden_size,
        conditioning=conditioning,
        prediction_type=cfg.prediction_type,
        text_whitening=cfg.text_whitening,
    )


def make_scheduler(cfg: PretrainConfig) -> FlowMatchEtaScheduler:
    return FlowMatchEtaScheduler(
        num_train_timesteps=1000, shift=cfg.shift, eta=cfg.sampler_eta, eta_below=cfg.sampler_eta_below
    )


def make_pipeline(tokenizer, lm, dit, cfg: PretrainConfig) -> ShapesDiTPipeline:
    return ShapesDiTPipeline(tokenizer=tokenizer, text_encoder=lm, transformer=dit, scheduler=make_scheduler(cfg))


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


class PromptStates:
    """The frozen LM's hidden states for every training caption, computed once (fp16, padded to one length).

    The LM costs as much per step as a third of the DiT step, and its output for a caption never changes, so
    the training loop reads states from here. `save`/`load` let the DiT processes of a run share one encoding;
    `select` keeps only the layers a conditioning reads.
    """

    def __init__(self, lm, tokenizer, texts: list[str], layers: list[int], batch_size: int = 256):
        self.index = {text: i for i, text in enumerate(dict.fromkeys(texts))}
        self.layers, self.num_states = list(layers), lm.config.num_hidden_layers + 1
        unique = list(self.index)
        masks, states = [], []
        for start in tqdm(range(0, len(unique), batch_size), desc="encode captions", unit="batch", leave=False):
            hidden, mask = encode(lm, tokenizer, unique[start : start + batch_size])
            masks.append(mask)
            states.append(torch.stack([hidden[k] for k in layers], dim=1).half())
        length = max(m.shape[1] for m in masks)
        self.mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in masks])
        self.states = torch.cat([torch.nn.functional.pad(h, (0, 0, 0, length - h.shape[2])) for h in states])

    def save(self, path: Path) -> None:
        state = {k: getattr(self, k) for k in ("index", "layers", "num_states", "mask", "states")}
        with atomic_open(path, "wb") as f:
            torch.save(state, f)

    @classmethod
    def load(cls, path: Path) -> PromptStates:
        states = cls.__new__(cls)
        states.__dict__.update(torch.load(path, weights_only=False, mmap=True))
        return states

    def select(self, layers: list[int]) -> PromptStates:
        """The same captions with only `layers` kept (copied out of a memory-mapped file into memory)."""
        missing = sorted(set(layers) - set(self.layers))
        if missing:
            raise ValueError(f"these caption states hold LM layers {self.layers}, not {missing}")
        picked = self.__class__.__new__(self.__class__)
        picked.__dict__.update(self.__dict__)
        picked.layers = list(layers)
        picked.states = self.states[:, [self.layers.index(k) for k in layers]].clone()
        return picked

    def statistics(self, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (num_states, width) and covariance (num_states, width, width) of every LM hidden state over the
        real tokens of all captions, as `CompositionDiT.set_text_statistics` reads them after whitening
        (states not kept: mean 0, covariance I)."""
        width = self.states.shape[-1]
        total = torch.zeros(len(self.layers), width, dtype=torch.float64)
        products, count = torch.zeros(len(self.layers), width, width, dtype=torch.float64), 0
        for start in range(0, len(self.states), chunk):
            mask = self.mask[start : start + chunk].bool()
            tokens = self.states[start : start + chunk].transpose(1, 2)[mask].double()  # (tokens, layers, width)
            total += tokens.sum(0)
            products += torch.einsum("nli,nlj->lij", tokens, tokens)
            count += len(tokens)
        mean = total / count
        covariance = products / count - mean[:, :, None] * mean[:, None, :]
        full_mean = torch.zeros(self.num_states, width)
        full_covariance = torch.eye(width, dtype=torch.float64).repeat(self.num_states, 1, 1)
        full_mean[self.layers], full_covariance[self.layers] = mean.float(), covariance
        return full_mean, full_covariance

    def __call__(self, texts: list[str]) -> tuple[tuple, torch.Tensor]:
        """(hidden states as `encode` gives them, None for layers not kept; mask), cut to the batch's length."""
        ids = torch.tensor([self.index[t] for t in texts])
        mask = self.mask[ids]
        length = int(mask.sum(1).max())
        picked = self.states[ids, :, :length].float()
        hidden = [None] * self.num_states
        for k, layer in enumerate(self.layers):
            hidden[layer] = picked[:, k]
        return tuple(hidden), mask[:, :length]


def layers_read(conditioning: str, num_layers: int) -> list[int]:
    """Which of the LM's hidden states (0 = embeddings) a conditioning reads."""
    return list(range(1, num_layers + 1)) if conditioning == "deep_fusion" else [num_layers]


def training_captions(cfg: PretrainConfig, prompts: list[str]) -> list[str]:
    """Every caption the DiT can be shown: the prompts, their mirrors and the empty (dropped) caption."""
    return [*prompts, *(map(mirror_prompt, prompts) if cfg.mirror else ()), ""]


def encode_captions(cfg: PretrainConfig, tokenizer, lm, prompts: list[str], path: Path) -> PromptStates:
    """The LM states of every training caption and every layer, encoded once per run and shared by the DiTs."""
    if path.is_file():
        return PromptStates.load(path)
    states = PromptStates(lm, tokenizer, training_captions(cfg, prompts), range(1, lm.config.num_hidden_layers + 1))
    states.save(path)
    return states


class FixedData:
    """Batches from a fixed set of renders (`num_images`), their captions' LM states computed once."""

    def __init__(self, cfg: PretrainConfig, images: np.ndarray, prompts: list[str], states: PromptStates):
        self.cfg, self.pixels, self.prompts, self.states = cfg, to_pixels(images), prompts, states

    def describe(self) -> str:
        return f"{len(self.pixels)} images ({self.cfg.batch_size * self.cfg.max_steps / len(self.pixels):.1f} epochs)"

    def batch(self, step: int, rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]:
        idx = rng.integers(len(self.pixels), size=self.cfg.batch_size)
        return self.pixels[idx], [self.prompts[i] for i in idx]

    def statistics(self):
        return self.states.statistics()


class StreamedData:
    """Every batch rendered fresh (`streaming`): one-object scenes first, annealed to the full mix (the
    curriculum), relations captioned from either object; the frozen LM encodes each batch's captions."""

    def __init__(self, cfg: PretrainConfig, tokenizer, lm, layers: list[int]):
        self.cfg, self.tokenizer, self.lm, self.layers = cfg, tokenizer, lm, layers

    def describe(self) -> str:
        cfg = self.cfg
        return (
            f"{cfg.batch_size * cfg.max_steps} fresh images, one-object share {cfg.single_object_start:.2f} -> "
            f"{cfg.single_object_end:.2f} over {cfg.curriculum_steps} steps, converse captions {cfg.converse_captions}"
        )

    def batch(self, step: int, rng: np.random.Generator):
        cfg = self.cfg
        share = single_object_share(step, cfg.single_object_start, cfg.single_object_end, cfg.curriculum_steps)
        images, captions = render_batch(rng, cfg.batch_size, share, cfg.converse_captions, canvas=cfg.canvas)
        return to_pixels(images), captions

    @torch.no_grad()
    def states(self, texts: list[str]):
        hidden, mask = encode(self.lm, self.tokenizer, texts)
        return tuple(h if k in self.layers else None for k, h in enumerate(hidden)), mask

    def statistics(self, n: int = 8192):
        """Whitening statistics over `n` captions of the curriculum's final mix."""
        cfg = self.cfg
        captions = sample_captions(n, cfg.seed + 7, cfg.single_object_end, cfg.converse_captions)
        return PromptStates(self.lm, self.tokenizer, captions, self.layers).statistics()


def checkpoint_state(model, ema, opt, step: int, history: list) -> dict:
    """What a sitting needs to continue exactly: weights, EMA, optimiser (its moments in bfloat16 and the EMA
    as a bfloat16 offset from the weights, to keep a checkpoint a third of its fp32 size), step and history.
    The data position and the learning-rate schedule follow from the step (per-step random streams)."""
    weights = model.state_dict()
    optimizer = opt.state_dict()  # its per-parameter dicts are the optimiser's own: copy, never modify
    optimizer["state"] = {
        k: {name: v.bfloat16() if name in ("exp_avg", "exp_avg_sq") else v for name, v in moments.items()}
        for k, moments in optimizer["state"].items()
    }
    ema_offset = {k: (v - weights[k]).bfloat16() if v.is_floating_point() else v for k, v in ema.state_dict().items()}
    return {"model": weights, "ema_offset": ema_offset, "optimizer": optimizer, "step": step,
            "history": json.dumps(history)}  # fmt: skip


def load_checkpoint(path: Path, model, ema, opt) -> tuple[int, list]:
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    if "ema" in state:  # checkpoints of earlier versions kept the EMA and moments in fp32
        ema.load_state_dict(state["ema"])
    else:
        weights = state["model"]
        ema.load_state_dict({k: weights[k] + v.float() if v.is_floating_point() else v
                             for k, v in state["ema_offset"].items()})  # fmt: skip
    for moments in state["optimizer"]["state"].values():
        for key in ("exp_avg", "exp_avg_sq"):
            moments[key] = moments[key].float()
    opt.load_state_dict(state["optimizer"])
    return state["step"], json.loads(state["history"])


def train_dit(cfg, conditioning, tokenizer, lm, data, out: Path, eval_fn=None) -> CompositionDiT | None:
    """Train one DiT with the given conditioning on `data` (`FixedData` or `StreamedData`); resumes from
    `out/checkpoint.pt`; returns the EMA model, or None when `sitting_minutes` ran out first (checkpoint saved)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_dit(cfg, conditioning, lm)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    start, history = 0, []
    checkpoint = out / "checkpoint.pt"
    if checkpoint.is_file():
        start, history = load_checkpoint(checkpoint, model, ema, opt)
        logger.info("resuming %s from step %d", conditioning, start)
    elif cfg.text_whitening:  # a resumed run has them in its checkpoint
        mean, covariance = data.statistics()
        for m in (model, ema):
            m.set_text_statistics(mean, whitening_from_covariance(covariance))
    params = sum(p.numel() for p in model.parameters())
    print(f"DiT[{conditioning}]: {params / 1e6:.2f}M parameters, batch {cfg.batch_size}, steps {start}->{cfg.max_steps}, "
          f"{data.describe()}")  # fmt: skip
    if eval_fn is None and cfg.eval_every:
        eval_fn = probe_on_val(cfg, tokenizer, lm)
    bar = tqdm(range(start, cfg.max_steps), desc=f"DiT {conditioning}", unit="step", initial=start, total=cfg.max_steps)
    # Training seconds count on across sittings (the last logged point of the checkpoint's history).
    sitting_started = time.perf_counter()
    started = sitting_started - max((h.get("seconds", 0.0) for h in history), default=0.0)
    for step in bar:
        # Per-step streams: a resumed run draws exactly the batches, timesteps and noise of an uninterrupted one.
        rng = np.random.default_rng([cfg.seed, step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        x0, texts = data.batch(step, rng)
        if cfg.mirror:
            flip = rng.random(cfg.batch_size) < 0.5
            x0[flip] = x0[flip].flip(-1)
            texts = [mirror_prompt(t) if f else t for t, f in zip(texts, flip)]
        texts = ["" if d else t for t, d in zip(texts, rng.random(cfg.batch_size) < cfg.caption_dropout)]
        hidden_states, mask = data.states(texts)
        t = sample_timesteps(cfg.batch_size, generator, cfg.timestep_mean, cfg.timestep_std)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = flow_interpolate(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16"):
            output = model(x_t, t * 1000, hidden_states, mask)
        loss = flow_loss(output.float(), x0, noise, t, cfg.prediction_type, cfg.loss_space)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, model, ema_decay(step, cfg.ema_decay))
        if step % 25 == 0:
            history.append({"step": step, "loss": loss.item(), "grad_norm": grad_norm.item(), "lr": lr_at(step, cfg),
                            "seconds": time.perf_counter() - started})  # fmt: skip
            bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        out_of_time = cfg.sitting_minutes and time.perf_counter() - sitting_started > 60 * cfg.sitting_minutes
        if done % cfg.checkpoint_every == 0 or done == cfg.max_steps or out_of_time:
            with atomic_open(checkpoint, "wb") as f:
                torch.save(checkpoint_state(model, ema, opt, done, history), f)
        if eval_fn and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.max_steps):
            history.append({"step": done, "eval": eval_fn(ema)})
            print(f"step {done}: {history[-1]['eval']}")
        if out_of_time and done < cfg.max_steps:
            print(f"sitting over after {cfg.sitting_minutes} min at step {done}; continue with --resume")
            return None
    write_json(out / "history.json", {"history": history, "training_seconds": time.perf_counter() - started})
    return ema


def probe_on_val(cfg: PretrainConfig, tokenizer, lm, n: int = 64):
    """`eval_every`'s measurement: the denoising probe on `n` ground-truth renders of val prompts."""
    from itercomp.models.data import render_dataset
    from itercomp.models.evaluate import denoising_probe

    images, prompts = render_dataset(n, seed=cfg.seed + 1, canvas=cfg.canvas, workers=1, split="val")
    return lambda model: denoising_probe(model.eval(), lm, tokenizer, images, prompts, seed=cfg.seed)


def save_member(pipe: ShapesDiTPipeline, out: Path) -> None:
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(tmp)
        (tmp / "done").touch()


# ---- the whole run -------------------------------------------------------------------------------------------


def load_member(path: Path) -> ShapesDiTPipeline:
    return ShapesDiTPipeline.from_pretrained(path)


def member_at_checkpoint(run_dir: Path, conditioning: str = "deep_fusion") -> tuple[ShapesDiTPipeline, int]:
    """(the pipeline with the EMA weights of a run's latest DiT checkpoint, its step): a member mid-training, for
    the learning curve of a run that goes on in sittings."""
    from itercomp.config import config_from_dict, read_yaml

    run_dir = Path(run_dir)
    cfg = config_from_dict(PretrainConfig, read_yaml(run_dir / "config.yaml"))
    checkpoint = run_dir / f"dit_{conditioning}" / "checkpoint.pt"
    if not (run_dir / "lm" / "done").is_file() or not checkpoint.is_file():
        raise ItercompError(f"{run_dir} has no language model or no {conditioning} checkpoint yet; run a sitting first")
    tokenizer, lm = train_language_model(cfg, [], run_dir / "lm")
    model = build_dit(cfg, conditioning, lm)
    ema = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters())
    step, _ = load_checkpoint(checkpoint, model, ema, opt)
    return make_pipeline(tokenizer, lm, ema.eval(), cfg), step


def evaluate_members(cfg: PretrainConfig, members: dict[str, Path], out: Path) -> dict:
    """Oracle accuracy per aspect on `eval_prompts` test prompts per aspect x `eval_seeds` seeds, per member."""
    from itercomp.models.evaluate import evaluate_pipeline, evaluation_prompts

    results = json.loads(out.read_text()) if out.is_file() else {}
    prompts = evaluation_prompts(cfg.eval_prompts, "test")
    for name, path in members.items():
        if name in results:
            continue
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


def load_training_data(cfg: PretrainConfig, root: Path) -> tuple[np.ndarray | None, list[str]]:
    """(images, captions): the fixed renders and their prompts, or with `streaming` no images and a sample of
    the stream's captions (what the language model trains on)."""
    if cfg.streaming:
        share = (cfg.single_object_start + cfg.single_object_end) / 2
        return None, sample_captions(cfg.num_images, cfg.seed, share, cfg.converse_captions)
    from itercomp.models.data import load_or_render

    return load_or_render(root / "data.npz", cfg.num_images, cfg.seed, cfg.canvas)


def _train_member(job, tokenizer=None, lm=None, images=None, prompts=None) -> bool:
    """Train one conditioning's DiT and save it as a pipeline; loads the run's data and LM when not given.
    False when the sitting ended first."""
    cfg, conditioning = job
    root = Path(cfg.output_dir)
    if lm is None:  # a worker process of `parallel`
        torch.set_num_threads(1)
        images, prompts = load_training_data(cfg, root)
        tokenizer, lm = train_language_model(cfg, prompts, root / "lm")
    layers = layers_read(conditioning, lm.config.num_hidden_layers)
    if cfg.streaming:
        data = StreamedData(cfg, tokenizer, lm, layers)
    else:
        states = encode_captions(cfg, tokenizer, lm, prompts, root / "caption_states.pt").select(layers)
        data = FixedData(cfg, images, prompts, states)
    ema = train_dit(cfg, conditioning, tokenizer, lm, data, root / f"dit_{conditioning}")
    if ema is None:
        return False
    save_member(make_pipeline(tokenizer, lm, ema, cfg), root / "members" / MEMBER_NAMES[conditioning])
    return True


def member_finished(cfg: PretrainConfig, root: Path, conditioning: str) -> bool:
    """Whether a conditioning's member is saved from a DiT that trained `max_steps` steps: a resumed run with a
    raised `max_steps` trains the DiT on from its checkpoint and saves the member again."""
    checkpoint = root / f"dit_{conditioning}" / "checkpoint.pt"
    if not (root / "members" / MEMBER_NAMES[conditioning] / "done").is_file():
        return False
    return not checkpoint.is_file() or torch.load(checkpoint, weights_only=True)["step"] >= cfg.max_steps


# Settings a resumed run may change: they do not alter what has been trained so far (`steps` extends or
# shortens the cosine schedule from the current step on; a run folder may be moved or copied, so `output_dir`).
# The layout expert is trained after the DiT, so its settings may change too (the member is rebuilt with it), and
# the sampler's fresh noise changes sampling only (the members get the new scheduler).
RESUMABLE_CHANGES = ("output_dir", "max_steps", "threads", "parallel", "sitting_minutes", "checkpoint_every",
                     "eval_every", "eval_prompts", "eval_seeds", "conditionings", "layout_expert_steps",
                     "layout_boundary", "layout_captions", "layout_renders", "sampler_eta", "sampler_eta_below")  # fmt: skip


def check_resume(cfg: PretrainConfig, root: Path, resume: bool) -> None:
    """A folder that holds a run is continued only with `resume`, and only with the settings it was started
    with (apart from RESUMABLE_CHANGES)."""
    from itercomp.config import config_from_dict, read_yaml, to_dict

    saved_path = root / "config.yaml"
    if not saved_path.is_file():
        return
    if not resume:
        raise ItercompError(
            f"{root} already holds a pretraining run; pass --resume to continue it, or choose another --output_dir"
        )
    saved, new = to_dict(config_from_dict(PretrainConfig, read_yaml(saved_path))), to_dict(cfg)
    changed = sorted(k for k in new if k not in RESUMABLE_CHANGES and saved.get(k) != new[k])
    if changed:
        raise ItercompError(
            f"--resume with settings that differ from the run in {root}: "
            + ", ".join(f"{k}={new[k]!r} (run: {saved.get(k)!r})" for k in changed)
            + f"; drop them (a resumed run may change only {', '.join(RESUMABLE_CHANGES)})"
        )


def run_pretrain(cfg: PretrainConfig, resume: bool = False) -> dict:
    """data -> language model -> one DiT per conditioning -> test evaluation; each finished stage is skipped.
    With `sitting_minutes` the DiTs stop with a checkpoint after that long; `resume` continues them."""
    from itercomp.config import save_config

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.output_dir)
    check_resume(cfg, root, resume)
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

    images, prompts = timed("data", lambda: load_training_data(cfg, root))
    tokenizer, lm = timed("language_model", lambda: train_language_model(cfg, prompts, root / "lm"))
    if not cfg.streaming:
        timed("caption_states", lambda: encode_captions(cfg, tokenizer, lm, prompts, root / "caption_states.pt"))
    members = {MEMBER_NAMES[c]: root / "members" / MEMBER_NAMES[c] for c in cfg.conditionings}
    todo = [c for c in cfg.conditionings if not member_finished(cfg, root, c)]
    if todo and cfg.parallel > 1:
        # Small models use two cores poorly; one single-threaded process per DiT trains ~1.5x more per second.
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(cfg.parallel, len(todo))) as pool:
            finished = timed("dits_parallel", lambda: pool.map(_train_member, [(cfg, c) for c in todo]))
    else:
        finished = [
            timed(f"dit_{c}", lambda c=c: _train_member((cfg, c), tokenizer, lm, images, prompts)) for c in todo
        ]
    if not all(finished):
        print(f"the sitting ended before every DiT finished; continue with: itercomp pretrain --resume "
              f"--output-dir {root} (and the same settings)")  # fmt: skip
        return {"members": {}, "eval": {}, "timings": timings, "finished": False}
    for conditioning in todo:  # a member trained now (a new or an extended run) is measured again
        forget_evaluation(root, MEMBER_NAMES[conditioning])
    if cfg.layout_expert_steps and "deep_fusion" in cfg.conditionings:
        timed("layout_expert", lambda: add_layout_expert(cfg, tokenizer, lm, root))
    update_samplers(cfg, members, root)
    results = timed("evaluation", lambda: evaluate_members(cfg, members, root / "eval_test.json"))
    training = sum(v for k, v in timings.items() if k != "evaluation")
    print(f"pretraining took {training / 60:.1f} min (+ {timings.get('evaluation', 0) / 60:.1f} min evaluation)")
    return {"members": {k: str(v) for k, v in members.items()}, "eval": results, "timings": timings,
            "finished": True}  # fmt: skip


def add_layout_expert(cfg: PretrainConfig, tokenizer, lm, root: Path) -> None:
    """Train the layout expert (`root/layout_expert`, again only when its settings change) and rebuild the
    deep-fusion member with it; the member's earlier test evaluation is dropped so that the run measures it again."""
    from itercomp.models.layout_expert import layout_settings, train_layout_expert, trained_settings, with_layout_expert

    member, out = root / "members" / MEMBER_NAMES["deep_fusion"], root / "layout_expert"
    pipe = load_member(member)
    trunk = pipe.transformer
    if trunk.layout_dit is not None and trained_settings(out) == layout_settings(cfg):
        return  # the member holds this expert already
    expert = train_layout_expert(cfg, tokenizer, lm, trunk, out)
    pipe.register_modules(transformer=with_layout_expert(trunk, expert, cfg.layout_boundary))
    save_member(pipe, member)
    forget_evaluation(root, member.name)


def update_samplers(cfg: PretrainConfig, members: dict[str, Path], root: Path) -> None:
    """Give each finished member the run's sampler (`sampler_eta` and `sampler_eta_below` may change on resume: they
    alter sampling, not training); a member whose sampler changed is measured again."""
    sampler = fresh_noise(make_scheduler(cfg).config)
    for name, path in members.items():
        if fresh_noise(json.loads((path / "scheduler" / "scheduler_config.json").read_text())) != sampler:
            pipe = load_member(path)
            pipe.register_modules(scheduler=make_scheduler(cfg))
            save_member(pipe, path)
            forget_evaluation(root, name)


def forget_evaluation(root: Path, member: str) -> None:
    """Drop a member's entry from the run's test evaluation, so that the run measures it again."""
    evaluation = root / "eval_test.json"
    if evaluation.is_file():
        write_json(evaluation, {k: v for k, v in json.loads(evaluation.read_text()).items() if k != member})


def export_weights(run_dir: Path, dest: Path, fp16: bool = True) -> list[Path]:
    """Copy a pretraining run's members into `dest` for shipping, weights stored as fp16 and loaded back as fp32
    (`ShapesDiTPipeline.from_pretrained`). Members that read the same language model share one copy of it under
    `dest/lm` through relative symlinks (three copies would triple the weights). When `dest/lm` already holds
    another language model (members shipped from an earlier run), this run's members carry their own
    `tokenizer` and `text_encoder` and the earlier members keep theirs."""
    run_dir, dest = Path(run_dir), Path(dest)
    members = sorted(p for p in (run_dir / "members").glob("*") if (p / "done").is_file())
    if not members:
        raise ItercompError(f"{run_dir}/members has no finished member; run 'itercomp pretrain' first")
    dtype = torch.float16 if fp16 else torch.float32
    first = load_member(members[0])
    shared = dest / "lm"
    share = not (shared / "text_encoder").is_dir() or _same_language_model(shared, first, dtype)
    if share:
        with atomic_dir(shared) as tmp:
            first.tokenizer.save_pretrained(tmp / "tokenizer")
            first.text_encoder.to(dtype).save_pretrained(tmp / "text_encoder")
    written = []
    for path in members:
        pipe = load_member(path)
        with atomic_dir(dest / path.name) as tmp:
            pipe.text_encoder.to(dtype)
            pipe.save_pretrained(tmp)
            statistics = ("text_mean", "text_whitening_matrix")
            exact = {k: v.clone() for k, v in pipe.transformer.named_buffers() if k.rsplit(".", 1)[-1] in statistics}
            transformer = pipe.transformer.to(dtype)
            for name, value in exact.items():  # the whitening stays fp32 (64 KB per LM layer read)
                transformer.get_buffer(name).data = value
            transformer.save_pretrained(tmp / "transformer")
            if share:
                for part in ("tokenizer", "text_encoder"):
                    shutil.rmtree(tmp / part)
                    (tmp / part).symlink_to(Path("..") / "lm" / part)
        written.append(dest / path.name)
    return written


def _same_language_model(shipped: Path, pipe: ShapesDiTPipeline, dtype: torch.dtype) -> bool:
    """Whether `shipped` (a `dest/lm` folder) holds the tokenizer and the weights (at `dtype`) of `pipe`'s LM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(shipped / "tokenizer")
    if tokenizer.get_vocab() != pipe.tokenizer.get_vocab():
        return False
    theirs = AutoModelForCausalLM.from_pretrained(shipped / "text_encoder", dtype=dtype).state_dict()
    ours = {k: v.to(dtype) for k, v in pipe.text_encoder.state_dict().items()}
    return theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
