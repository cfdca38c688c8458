"""Simulated rankings in the shapes world, to develop and test reward models before a gallery exists.

For each prompt the candidate pool holds the true render, renders of one-attribute contradicting edits (the
hard negatives of composition), edits of edits, renders with one object erased, and noisy versions of these.
Candidates are picked so their oracle scores differ by at least `min_score_gap` (a ranking of near-identical
images says little, for a simulated annotator as for a human one), then ranked by the oracle's soft score,
optionally with Plackett-Luce noise (Gumbel-perturbed utilities) to imitate an imperfect annotator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from itercomp.errors import PromptError
from itercomp.io import save_png, write_json
from itercomp.rankings import RANKINGS_FILE, plackett_luce, write_rankings
from itercomp.records import SIMULATED, Candidate, Ranking, image_id
from itercomp.world import PALETTE, generate_prompts, parse, prompt_id, render, score
from itercomp.world.edits import edits
from reward_models.config import RankingDataConfig


def _noisy(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0.0, std * 255.0, image.shape)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _erase(image: np.ndarray, color: str) -> np.ndarray:
    out = image.copy()
    out[(image == np.array(PALETTE[color], dtype=np.uint8)).all(-1)] = 0
    return out


def candidate_pool(prompt: str, rng: np.random.Generator, config: RankingDataConfig) -> list[tuple[str, np.ndarray]]:
    """(kind, image) candidates for one prompt, the true render first."""
    scene = parse(prompt)
    seed = lambda: int(rng.integers(2**31))  # noqa: E731
    clean = render(scene, seed(), config.canvas)
    pool = [("render", clean), ("render", render(scene, seed(), config.canvas))]
    negatives = []
    for kind, edited in edits(scene, rng):
        try:
            image = render(edited, seed(), config.canvas)
        except PromptError:  # an edit the renderer cannot lay out (e.g. a size that breaks `inside`)
            continue
        negatives.append((f"edit-{kind}", image, edited))
    pool += [(kind, image) for kind, image, _ in negatives]
    for _, _, edited in negatives[:2]:
        for kind, twice in edits(edited, rng)[:1]:
            try:
                pool.append((f"edit2-{kind}", render(twice, seed(), config.canvas)))
            except PromptError:
                continue
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    pool.append(("erase", _erase(clean, obj.color)))
    low, high = config.pixel_noise
    for kind, image in list(pool[:1]) + [pool[int(rng.integers(2, len(pool)))]]:
        pool.append((f"noisy-{kind}", _noisy(image, float(rng.uniform(low, high)), rng)))
    return pool


def pick_candidates(scored: list[tuple[str, np.ndarray, float]], n: int, min_gap: float, rng) -> list[int]:
    """Indices of up to n candidates whose scores are pairwise >= min_gap apart; the first one always kept."""
    chosen = [0]
    for i in [0, *rng.permutation(np.arange(1, len(scored)))][1:]:
        if len(chosen) == n:
            break
        if all(abs(scored[i][2] - scored[j][2]) >= min_gap for j in chosen):
            chosen.append(int(i))
    return chosen


def make_rankings(config: RankingDataConfig) -> Path:
    """Write images/ and rankings.jsonl (one Ranking per prompt and aspect) under config.output_dir; return the jsonl."""
    out = Path(config.output_dir)
    rng = np.random.default_rng(config.seed)
    jobs = [
        (aspect, prompt)
        for aspect in config.aspects
        for split, n in (("train", config.train_prompts), ("val", config.val_prompts), ("test", config.test_prompts))
        for prompt in generate_prompts(aspect, split, n, seed=config.seed)
    ]
    rankings = []
    for aspect, prompt in tqdm(jobs, desc="simulate rankings", unit="prompt"):
        pid = prompt_id(prompt)
        scored = [(kind, image, score(image, prompt).score) for kind, image in candidate_pool(prompt, rng, config)]
        chosen = pick_candidates(scored, config.candidates, config.min_score_gap, rng)
        candidates = []
        for k, i in enumerate(chosen):
            kind, image, _ = scored[i]
            generator = f"sim-{kind}"
            iid = image_id(pid, generator, k)
            path = f"images/{aspect}/{iid}.png"
            candidates.append(Candidate(iid, generator, k, path, save_png(out / path, image)))
        scores = np.array([scored[i][2] for i in chosen])
        order = [candidates[i].image_id for i in plackett_luce(scores, config.noise_temperature, rng)]
        shown = [candidates[i].image_id for i in rng.permutation(len(candidates))]
        rankings.append(Ranking(pid, prompt, aspect, candidates, order, SIMULATED, shown_order=shown))
    path = write_rankings(out / RANKINGS_FILE, rankings)
    write_json(out / "simulation.json", {k: getattr(config, k) for k in config.__dataclass_fields__})
    return path
