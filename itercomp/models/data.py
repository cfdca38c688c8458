"""Training data for the base model: ground-truth renders of `train` split prompts, cached to disk."""

from __future__ import annotations

import re
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from itercomp.errors import PromptError
from itercomp.world.prompts import sample_scene, split_of
from itercomp.world.render import DEFAULT_CANVAS, draw, layout
from itercomp.world.vocab import ASPECTS

# Share of each aspect in pretraining data; complex prompts are rarer, as in real caption data.
DEFAULT_MIX = {"attribute_binding": 0.3, "spatial_relationship": 0.3, "non_spatial_relationship": 0.3, "complex": 0.1}
LAYOUT_TRIES = 300


def _render_chunk(args) -> tuple[np.ndarray, list[str]]:
    seed, aspects, canvas, split, renders = args
    rng = np.random.default_rng(seed)
    images, prompts = [], []
    for aspect in aspects:
        while True:
            scene = sample_scene(aspect, rng)
            text = scene.prompt()
            if split_of(text) != split:
                continue
            try:
                drawn = [draw(layout(scene, rng, canvas, max_tries=LAYOUT_TRIES), canvas) for _ in range(renders)]
            except PromptError:
                continue
            images += drawn
            prompts += [text] * renders
            break
    return np.stack(images), prompts


def _rendered(jobs: list[tuple], workers: int):
    """The rendered chunks in order: in this process for one worker or one chunk, else in a pool."""
    if workers <= 1 or len(jobs) == 1:
        yield from map(_render_chunk, jobs)
        return
    with Pool(workers) as pool:
        yield from pool.imap(_render_chunk, jobs)


def render_dataset(
    n: int,
    seed: int = 0,
    mix: dict[str, float] | None = None,
    canvas: int = DEFAULT_CANVAS,
    workers: int = 2,
    split: str = "train",
    renders: int = 1,
) -> tuple[np.ndarray, list[str]]:
    """`n` (image, prompt) pairs from one prompt split, aspects drawn by `mix`; deterministic for a seed.

    With `renders` > 1 each prompt is drawn that many times in a row (different layouts, `n` a multiple of it):
    the renders of one caption are what the posterior-mean training target averages over."""
    if n % renders:
        raise ValueError(f"{n} images do not split into groups of renders={renders}; use a multiple of it")
    mix = mix or DEFAULT_MIX
    rng = np.random.default_rng(seed)
    aspects = list(rng.choice(ASPECTS, size=n // renders, p=[mix.get(a, 0.0) for a in ASPECTS]))
    chunk = 500 // renders or 1
    jobs = [
        (seed * 1_000_003 + k, aspects[k : k + chunk], canvas, split, renders) for k in range(0, len(aspects), chunk)
    ]
    images, prompts = [], []
    for imgs, texts in tqdm(_rendered(jobs, workers), total=len(jobs), desc=f"render {split} data", unit="chunk"):
        images.append(imgs)
        prompts += texts
    return np.concatenate(images), prompts


def load_or_render(
    path: Path, n: int, seed: int = 0, canvas: int = DEFAULT_CANVAS, renders: int = 1
) -> tuple[np.ndarray, list[str]]:
    """The cached dataset at `path` if it has `n` images of this canvas and renders per caption, else render and
    cache it."""
    path = Path(path)
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        cached_renders = int(data["renders"]) if "renders" in data else 1
        if len(data["prompts"]) == n and data["images"].shape[1] == canvas and cached_renders == renders:
            return data["images"], [str(p) for p in data["prompts"]]
    images, prompts = render_dataset(n, seed, canvas=canvas, renders=renders)
    tmp = path.with_suffix(".tmp.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(tmp, images=images, prompts=np.array(prompts), renders=np.array(renders))
    tmp.replace(path)
    return images, prompts


_MIRROR = {"left": "right", "right": "left"}


def mirror_prompt(prompt: str) -> str:
    """The prompt of the horizontally flipped image (every shape is left-right symmetric)."""
    return re.sub(r"\b(left|right)\b", lambda m: _MIRROR[m.group(1)], prompt)
