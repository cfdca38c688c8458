"""Oracle evaluation of a text-to-image pipeline on a prompt split: per-aspect binary accuracy and soft score."""

from __future__ import annotations

import numpy as np
import torch

from itercomp.world.evaluate import summarize
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
                rows.append(
                    {
                        "prompt_id": prompt_id(prompt),
                        "prompt": prompt,
                        "aspect": aspect,
                        "seed": seed,
                        "correct": verdict.correct,
                        "score": verdict.score,
                    }
                )
                images.append(image)
    return {"summary": summarize(rows), "rows": rows, "images": np.stack(images)}
