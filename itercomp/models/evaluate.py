"""Oracle evaluation of a text-to-image pipeline on a prompt split: per-aspect binary accuracy and soft score."""

from __future__ import annotations

import numpy as np
import torch

from itercomp.world.evaluate import coverage, objects_drawn, summarize
from itercomp.world.oracle import score
from itercomp.world.prompts import generate_prompts
from itercomp.world.scene import prompt_id
from itercomp.world.vocab import ASPECTS


def evaluation_prompts(n: int, split: str = "test", aspects=ASPECTS) -> list[tuple[str, str]]:
    return [(a, p) for a in aspects for p in generate_prompts(a, split, n)]


@torch.no_grad()
def evaluate_pipeline(pipe, prompts: list[tuple[str, str]], seeds=(0,), batch_size: int = 100, **call_kwargs) -> dict:
    """Sample every (aspect, prompt) once per seed (seed k -> generator seeded with k * 100003 + index)."""
    rows, images = [], []
    pipe.set_progress_bar_config(disable=True)
    for seed in seeds:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            generators = [torch.Generator().manual_seed(seed * 100003 + start + k) for k in range(len(chunk))]
            out = pipe([p for _, p in chunk], generator=generators, output_type="np", **call_kwargs).images
            for (aspect, prompt), image in zip(chunk, out):
                verdict = score(image, prompt)
                drawn = objects_drawn(verdict)
                rows.append(
                    {
                        "objects": len(drawn),
                        "objects_drawn": sum(drawn),
                        "coverage": coverage(image),
                        "prompt_id": prompt_id(prompt),
                        "prompt": prompt,
                        "aspect": aspect,
                        "seed": seed,
                        "correct": verdict.correct,
                        "score": verdict.score,
                    }
                )
                images.append(image)
    summary = summarize(rows)
    for aspect, entry in summary.items():
        mine = [r for r in rows if r["aspect"] == aspect]
        entry["object_accuracy"] = sum(r["objects_drawn"] for r in mine) / max(1, sum(r["objects"] for r in mine))
        entry["coverage"] = float(np.mean([r["coverage"] for r in mine]))
    return {"summary": summary, "rows": rows, "images": np.stack(images)}


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
