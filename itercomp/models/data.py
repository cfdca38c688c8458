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
from itercomp.world.scene import Relation, Scene
from itercomp.world.vocab import ASPECTS, OPPOSITE

# Share of each aspect in pretraining data; complex prompts are rarer, as in real caption data.
DEFAULT_MIX = {"attribute_binding": 0.3, "spatial_relationship": 0.3, "non_spatial_relationship": 0.3, "complex": 0.1}
LAYOUT_TRIES = 300


def _render_chunk(args) -> tuple[np.ndarray, list[str]]:
    seed, aspects, canvas, split = args
    rng = np.random.default_rng(seed)
    images, prompts = [], []
    for aspect in aspects:
        while True:
            scene = sample_scene(aspect, rng)
            text = scene.prompt()
            try:  # a sampled scene may break a world rule (PromptError) or not fit the canvas
                if split_of(text) != split:
                    continue
                images.append(draw(layout(scene, rng, canvas, max_tries=LAYOUT_TRIES), canvas))
            except PromptError:
                continue
            prompts.append(text)
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
) -> tuple[np.ndarray, list[str]]:
    """`n` (image, prompt) pairs from one prompt split, aspects drawn by `mix`; deterministic for a seed."""
    mix = mix or DEFAULT_MIX
    rng = np.random.default_rng(seed)
    aspects = list(rng.choice(ASPECTS, size=n, p=[mix.get(a, 0.0) for a in ASPECTS]))
    chunk = 500
    jobs = [(seed * 1_000_003 + k, aspects[k : k + chunk], canvas, split) for k in range(0, len(aspects), chunk)]
    images, prompts = [], []
    for imgs, texts in tqdm(_rendered(jobs, workers), total=len(jobs), desc=f"render {split} data", unit="chunk"):
        images.append(imgs)
        prompts += texts
    return np.concatenate(images), prompts


def load_or_render(path: Path, n: int, seed: int = 0, canvas: int = DEFAULT_CANVAS) -> tuple[np.ndarray, list[str]]:
    """The cached dataset at `path` if it has `n` images of this canvas, else render and cache it."""
    path = Path(path)
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        if len(data["prompts"]) == n and data["images"].shape[1] == canvas:
            return data["images"], [str(p) for p in data["prompts"]]
    images, prompts = render_dataset(n, seed, canvas=canvas)
    tmp = path.with_suffix(".tmp.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(tmp, images=images, prompts=np.array(prompts))
    tmp.replace(path)
    return images, prompts


_MIRROR = {"left": "right", "right": "left"}


def mirror_prompt(prompt: str) -> str:
    """The prompt of the horizontally flipped image (every shape is left-right symmetric)."""
    return re.sub(r"\b(left|right)\b", lambda m: _MIRROR[m.group(1)], prompt)


# ---- streamed training data: every image new, with a curriculum over the number of objects ----------------------

# The relation read from the other object's side ("A left of B" is "B right of A"): the opposite word, or the same
# word for the symmetric ones; `inside` has no converse word.
CONVERSE = {**OPPOSITE, "and": "and", "touching": "touching"}


def converse_scene(scene: Scene) -> Scene:
    """The same scene described from the other object of each clause that has a converse ("a red circle to the
    left of a blue square" -> "a blue square to the right of a red circle"); the image is unchanged."""
    clauses = tuple((o, CONVERSE[r], s) if r in CONVERSE else (s, r, o) for s, r, o in scene.clauses)
    relations = tuple(
        Relation(rel.object, CONVERSE[rel.name], rel.subject) if rel.name in CONVERSE else rel
        for rel in scene.relations
    )
    return Scene(scene.objects, relations, clauses)


def single_object_share(step: int, start: float, end: float, anneal_steps: int) -> float:
    """The curriculum: the share of one-object scenes falls linearly from `start` to `end` over `anneal_steps`."""
    if anneal_steps <= 0:
        return end
    return start + (end - start) * min(1.0, step / anneal_steps)


def sample_single_object(rng: np.random.Generator) -> Scene:
    """One object of any colour and shape; size and fill spelled out as often as in the aspects' prompts."""
    obj = sample_scene("attribute_binding", rng).objects[0]
    return Scene((obj,), (), ())


def caption(scene: Scene, rng: np.random.Generator, converse_share: float) -> str:
    """The scene's prompt, or with probability `converse_share` its converse when that is a train prompt too
    (a converse may hash into val or test, which training never shows)."""
    if len(scene.objects) == 1:
        return scene.objects[0].phrase()
    text = scene.prompt()
    if rng.random() < converse_share:
        other = converse_scene(scene).prompt()
        if other != text and split_of(other) == "train":
            return other
    return text


def _train_scenes(rng: np.random.Generator, single_share: float, mix: dict[str, float] | None):
    """Scenes as the stream draws them: one object with probability `single_share`, else an aspect by `mix`;
    multi-object scenes only when their prompt is in the train split and keeps the world's rules."""
    mix = mix or DEFAULT_MIX
    weights = np.array([mix.get(a, 0.0) for a in ASPECTS])
    while True:
        if rng.random() < single_share:
            yield sample_single_object(rng)
            continue
        scene = sample_scene(ASPECTS[rng.choice(len(ASPECTS), p=weights / weights.sum())], rng)
        try:
            if split_of(scene.prompt()) == "train":
                yield scene
        except PromptError:  # a sampled scene may break a world rule
            continue


def render_batch(
    rng: np.random.Generator,
    n: int,
    single_share: float = 0.0,
    converse_share: float = 0.0,
    mix: dict[str, float] | None = None,
    canvas: int = DEFAULT_CANVAS,
) -> tuple[np.ndarray, list[str]]:
    """`n` fresh (image, caption) pairs of train-split scenes: one-object scenes with probability `single_share`,
    the others drawn from the aspects by `mix`; deterministic for the generator's state."""
    images, captions, scenes = [], [], _train_scenes(rng, single_share, mix)
    while len(images) < n:  # no scene is drawn past the last one: the caller's generator goes on
        scene = next(scenes)
        try:
            images.append(draw(layout(scene, rng, canvas, max_tries=LAYOUT_TRIES), canvas))
        except PromptError:  # no layout fits the canvas
            continue
        captions.append(caption(scene, rng, converse_share))
    return np.stack(images), captions


def sample_captions(
    n: int, seed: int, single_share: float = 0.0, converse_share: float = 0.0, mix: dict[str, float] | None = None
) -> list[str]:
    """`n` captions as `render_batch` draws them, without drawing (for the LM and the whitening statistics)."""
    return sample_scenes(n, seed, single_share, converse_share, mix)[1]


def sample_scenes(
    n: int, seed: int, single_share: float = 0.0, converse_share: float = 0.0, mix: dict[str, float] | None = None
) -> tuple[list[Scene], list[str]]:
    """`n` (scene, caption) pairs as `render_batch` draws them, without drawing."""
    rng = np.random.default_rng(seed)
    scenes, captions, source = [], [], _train_scenes(rng, single_share, mix)
    while len(captions) < n:
        scenes.append(next(source))
        captions.append(caption(scenes[-1], rng, converse_share))
    return scenes, captions
