"""The layout expert: a second DiT for the highest noise levels, trained on the captions' mean renders.

Where the sampler starts (noise level >= `layout_boundary`), x_t is nearly pure noise and the best x0 prediction
is the mean of the caption's renders, which puts each object's colour on the side its relation names. A DiT
trained on single renders sees that mean only as the average of very noisy targets and never learns it (the flip
test stays near 1 at every pretraining budget measured), while a fresh DiT trained on the means learns it in a few
thousand steps (`bench/relation_learnability.py`). The expert is trained on `layout_captions` captions of the
pretraining stream (and their mirror images), each with the mean of `layout_renders` renders as its target, at
noise levels drawn uniformly from [layout_boundary, 1] on x_t made from one fresh render; an empty caption
(`caption_dropout`, for guidance) has the mean of all the captions' means. `with_layout_expert` puts it into
a member's transformer (`CompositionDiT(layout_expert=...)`), which routes the high-noise rows to it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from itercomp.errors import PromptError
from itercomp.io import atomic_dir, atomic_open, write_json
from itercomp.models.config import PretrainConfig
from itercomp.models.data import LAYOUT_TRIES, mirror_prompt, sample_scenes
from itercomp.models.dit import CompositionDiT
from itercomp.models.language import encode
from itercomp.models.training import flow_interpolate
from itercomp.world.render import draw, layout
from itercomp.world.scene import Scene


def _draw(scene: Scene, seed: int, canvas: int) -> np.ndarray | None:
    """One render of the scene at a seed, or None when that seed's layout tries all fail."""
    try:
        return draw(layout(scene, np.random.default_rng(seed), canvas, max_tries=LAYOUT_TRIES), canvas)
    except PromptError:
        return None


def mean_renders(scenes: list[Scene], renders: int, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x H x W x 3, int N x renders): the mean of `renders` renders of each scene and their seeds, the
    first seeds whose layout fits among 4 x renders (-1 where fewer fit; a scene that fits none is black)."""
    means = np.zeros((len(scenes), canvas, canvas, 3), dtype=np.uint8)
    seeds = np.full((len(scenes), renders), -1, dtype=np.int64)
    for i, scene in enumerate(tqdm(scenes, desc="caption means", unit="caption", leave=False)):
        drawn = [
            (seed, image) for seed in range(4 * renders) for image in [_draw(scene, seed, canvas)] if image is not None
        ]
        drawn = drawn[:renders]
        if drawn:
            means[i] = np.round(np.stack([image for _, image in drawn]).astype(np.float32).mean(0))
            seeds[i, : len(drawn)] = [seed for seed, _ in drawn]
    return means, seeds


@dataclasses.dataclass
class LayoutBank:
    """`layout_captions` scenes of the stream's final mix (train split) with their captions, mean images in
    [-1, 1] and the seeds of the renders that made them; row i + N is row i's mirror image (left and right
    swapped in the caption, the mean flipped). Scenes that fit fewer than half of `layout_renders` layouts are
    left out. `cache` (an .npz) keeps the means between runs."""

    scenes: list[Scene]
    captions: list[str]
    means: torch.Tensor
    seeds: np.ndarray

    @classmethod
    def sample(cls, cfg: PretrainConfig, cache: Path | None = None) -> LayoutBank:
        scenes, captions = sample_scenes(cfg.layout_captions, cfg.seed + 11, cfg.single_object_end,
                                         cfg.converse_captions)  # fmt: skip
        saved = np.load(cache) if cache is not None and cache.is_file() else None
        shape = (cfg.layout_captions, cfg.layout_renders)
        if saved is not None and saved["seeds"].shape == shape and saved["means"].shape[1] == cfg.canvas:
            means, seeds = saved["means"], saved["seeds"]
        else:  # none yet, or one of other settings
            means, seeds = mean_renders(scenes, cfg.layout_renders, cfg.canvas)
            if cache is not None:
                with atomic_open(cache, "wb") as f:
                    np.savez(f, means=means, seeds=seeds)
        fits = (seeds >= 0).sum(1) >= max(1, cfg.layout_renders // 2)
        scenes, captions = [s for s, f in zip(scenes, fits) if f], [c for c, f in zip(captions, fits) if f]
        means = torch.from_numpy(means[fits]).permute(0, 3, 1, 2).float() / 127.5 - 1
        return cls(scenes, captions + [mirror_prompt(c) for c in captions], torch.cat([means, means.flip(-1)]),
                   seeds[fits])  # fmt: skip

    def __len__(self) -> int:
        return len(self.captions)

    def render(self, i: int, k: int, canvas: int) -> torch.Tensor:
        """Render k (any integer: taken modulo the renders) of row i, 3 x H x W in [-1, 1]."""
        n = len(self.scenes)
        seeds = self.seeds[i % n][self.seeds[i % n] >= 0]
        image = torch.from_numpy(_draw(self.scenes[i % n], int(seeds[k % len(seeds)]), canvas)).permute(2, 0, 1)
        image = image.float() / 127.5 - 1
        return image.flip(-1) if i >= n else image


def train_layout_expert(cfg: PretrainConfig, tokenizer, lm, trunk: CompositionDiT, out: Path) -> CompositionDiT:
    """Train (or load, when `out/done` exists) the layout expert: the trunk's architecture with fresh weights and
    the trunk's text whitening, at `learning_rate` with warmup and cosine over `layout_expert_steps`."""
    from itercomp.models.pretrain import lr_at

    if trained_settings(out) == layout_settings(cfg):
        return CompositionDiT.from_pretrained(out)
    torch.manual_seed(cfg.seed + 11)
    model = CompositionDiT(**dit_options(trunk))
    if model.config.text_whitening:
        model.load_state_dict({k: v for k, v in trunk.state_dict().items() if k.startswith("text_")}, strict=False)
    bank = LayoutBank.sample(cfg, cache=out.parent / f"{out.name}_means.npz")
    null = bank.means.mean(0)  # the best x0 for an empty caption
    schedule = dataclasses.replace(cfg, max_steps=cfg.layout_expert_steps)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.99))
    history, bar = [], tqdm(range(cfg.layout_expert_steps), desc="layout expert", unit="step")
    for step in bar:
        rng = np.random.default_rng([cfg.seed, 11, step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        idx = rng.integers(len(bank), size=cfg.batch_size)
        dropped = rng.random(cfg.batch_size) < cfg.caption_dropout
        texts = ["" if d else bank.captions[i] for i, d in zip(idx, dropped)]
        targets = torch.where(torch.from_numpy(dropped)[:, None, None, None], null, bank.means[idx])
        x0 = torch.stack([bank.render(i, int(rng.integers(2**31)), cfg.canvas) for i in idx])
        t = cfg.layout_boundary + (1 - cfg.layout_boundary) * torch.rand(cfg.batch_size, generator=generator)
        x_t = flow_interpolate(x0, torch.randn(x0.shape, generator=generator), t)
        with torch.no_grad():
            hidden, mask = encode(lm, tokenizer, texts)
        loss = (model(x_t, t * 1000, hidden, mask) - targets).square().mean()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, schedule)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 25 == 0:
            history.append({"step": step, "loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval().requires_grad_(False)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        write_json(tmp / "history.json", {"history": history, "captions": len(bank), "settings": layout_settings(cfg)})
        (tmp / "done").touch()
    return model


def layout_settings(cfg: PretrainConfig) -> dict:
    """What the expert's training depends on beyond the run's own (fixed) settings."""
    return {k: getattr(cfg, k) for k in ("layout_expert_steps", "layout_boundary", "layout_captions", "layout_renders")}


def trained_settings(out: Path) -> dict | None:
    """The settings of the expert trained in `out`, or None when there is none."""
    if not (out / "done").is_file():
        return None
    return json.loads((out / "history.json").read_text()).get("settings")


def dit_options(model: CompositionDiT) -> dict:
    """A CompositionDiT's init arguments, without its layout expert."""
    return {k: v for k, v in model.config.items() if not k.startswith("_") and not k.startswith("layout_")}


def with_layout_expert(trunk: CompositionDiT, expert: CompositionDiT, boundary: float) -> CompositionDiT:
    """One CompositionDiT: `trunk` below noise level `boundary`, `expert` at and above it."""
    combined = CompositionDiT(**dit_options(trunk), layout_expert=dit_options(expert), layout_boundary=boundary)
    trunk_state = {k: v for k, v in trunk.state_dict().items() if not k.startswith("layout_dit.")}
    state = {**trunk_state, **{f"layout_dit.{k}": v for k, v in expert.state_dict().items()}}
    combined.load_state_dict(state)
    return combined.to(trunk.dtype).eval()
