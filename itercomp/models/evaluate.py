"""Oracle evaluation of a text-to-image pipeline on a prompt split: per-aspect binary accuracy and soft score."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from itercomp.world.evaluate import coverage, object_misses, objects_drawn, summarize
from itercomp.world.oracle import score
from itercomp.world.prompts import generate_prompts
from itercomp.world.vocab import ASPECTS


def evaluation_prompts(n: int, split: str = "test", aspects=ASPECTS) -> list[tuple[str, str]]:
    return [(a, p) for a in aspects for p in generate_prompts(a, split, n)]


@torch.no_grad()
def sample_pipeline(
    pipe,
    prompts: list[tuple[str, str]],
    seeds=(0,),
    batch_size: int = 100,
    rank: int = 0,
    world: int = 1,
    **call_kwargs,
):
    """Every (aspect, prompt) sampled once per seed, image i of a seed from a generator seeded with
    seed * 100003 + i, so an image does not depend on which process draws it: rows of {index, prompt_id, prompt,
    aspect, seed} and the images (N x H x W x 3 uint8). With `world` > 1 this process draws every world-th
    prompt from `rank` on."""
    from itercomp.prompts import generic_prompt_id

    rows, images = [], []
    pipe.set_progress_bar_config(disable=True)
    mine = list(range(rank, len(prompts), world))
    for seed in seeds:
        for start in range(0, len(mine), batch_size):
            chunk = mine[start : start + batch_size]
            generators = [torch.Generator().manual_seed(seed * 100003 + i) for i in chunk]
            out = pipe([prompts[i][1] for i in chunk], generator=generators, output_type="np", **call_kwargs).images
            for i, image in zip(chunk, out):
                aspect, prompt = prompts[i]
                rows.append(
                    {
                        "index": i,
                        "prompt_id": generic_prompt_id(prompt),
                        "prompt": prompt,
                        "aspect": aspect,
                        "seed": seed,
                    }
                )
                images.append(to_uint8(image))
    return rows, np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)


def to_uint8(image) -> np.ndarray:
    """An H x W x 3 image as uint8: float images in [0, 1] (diffusers' "np" output) are scaled and rounded."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def oracle_rows(rows: list[dict], images) -> list[dict]:
    """The sampled rows with the oracle's verdict, soft score, objects drawn and coverage of each image."""
    out = []
    for row, image in zip(rows, images):
        verdict = score(image, row["prompt"])
        drawn = objects_drawn(verdict)
        out.append(
            {
                "objects": len(drawn),
                "objects_drawn": sum(drawn),
                "object_misses": object_misses(verdict),
                "coverage": coverage(image),
                **row,
                "correct": verdict.correct,
                "score": verdict.score,
            }
        )
    return out


def shapes_summary(rows: list[dict]) -> dict:
    """Per aspect: the oracle's accuracy and mean soft score, the share of the prompts' objects drawn as asked
    and the mean coverage."""
    return add_object_stats(summarize(rows), rows)


def add_object_stats(summary: dict, rows: list[dict]) -> dict:
    """`object_accuracy`, `object_misses` (per predicate kind, the share of the objects that fail on it) and
    `coverage` added to each aspect of a summary whose rows carry the shapes evaluator's object counts (other
    evaluators' summaries are returned as they are)."""
    for aspect, entry in summary.items():
        mine = [r for r in rows if r["aspect"] == aspect]
        if mine and all("objects_drawn" in r for r in mine):
            objects = max(1, sum(r["objects"] for r in mine))
            entry["object_accuracy"] = sum(r["objects_drawn"] for r in mine) / objects
            misses = Counter()
            for r in mine:
                misses.update(r.get("object_misses", {}))
            entry["object_misses"] = {kind: n / objects for kind, n in sorted(misses.items())}
            entry["coverage"] = float(np.mean([r["coverage"] for r in mine]))
    return summary


def evaluate_pipeline(pipe, prompts: list[tuple[str, str]], seeds=(0,), batch_size: int = 100, **call_kwargs) -> dict:
    """The oracle on a pipeline's samples (`sample_pipeline`): {summary, rows, images}."""
    rows, images = sample_pipeline(pipe, prompts, seeds, batch_size, **call_kwargs)
    rows = oracle_rows([{k: v for k, v in r.items() if k != "index"} for r in rows], images)
    return {"summary": shapes_summary(rows), "rows": rows, "images": images}


NOISE_LEVELS = (0.3, 0.5, 0.7, 0.9)


@torch.no_grad()
def denoising_probe(dit, lm, tokenizer, images: np.ndarray, prompts: list[str], noise_levels=NOISE_LEVELS, seed=0):
    """One-step clean-image estimates from noised ground truth, per noise level t: their x0 error and the
    oracle's accuracy on them. Cheap (one forward pass per level) and far less noisy than sampling, so it shows
    early which noise levels a model has learned: low t is local denoising, high t is choosing the layout.
    `caption_gap` is how much worse the x0 error gets when every image is given another image's caption:
    how much the model reads its prompt (0 for a model that ignores it)."""
    from itercomp.models.language import encode
    from itercomp.models.training import flow_interpolate, output_to_x0

    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    hidden_states, mask = encode(lm, tokenizer, list(prompts))
    wrong = [h.roll(1, 0) for h in hidden_states], mask.roll(1, 0)  # image k gets caption k - 1
    result = {}
    for level in noise_levels:
        t = torch.full((len(x0),), float(level))
        x_t = flow_interpolate(x0, noise, t)
        estimate = output_to_x0(dit(x_t, t * 1000, hidden_states, mask), x_t, t, dit.config.prediction_type)
        misled = output_to_x0(dit(x_t, t * 1000, *wrong), x_t, t, dit.config.prediction_type)
        error, wrong_error = (estimate - x0).square().mean(), (misled - x0).square().mean()
        pixels = ((estimate.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        result[f"t={level}"] = {
            "x0_mse": round(float(error), 5),
            "oracle_accuracy": round(float(np.mean([score(im, p).correct for im, p in zip(pixels, prompts)])), 3),
            "caption_gap": round(float(1 - error / wrong_error), 4),
        }
    return result
