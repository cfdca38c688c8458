"""A small gallery run drawn from the shapes world, for trying the app and for tests.

It stands in for `itercomp gallery generate` (same `manifest.jsonl` layout) with four stand-in generators whose
quality differs in known ways, so rankings of its images carry signal: `faithful` draws the prompt, `one-edit`
draws a prompt with one attribute or relation contradicted, `two-edits` two, and `noisy` draws the prompt under
heavy pixel noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from itercomp.errors import PromptError
from itercomp.io import save_png, write_jsonl
from itercomp.records import MANIFEST, ImageRecord, image_id
from itercomp.world import generate_prompts, parse, prompt_id, render
from itercomp.world.edits import edits
from itercomp.world.scene import Scene

TOY_GENERATORS = ("faithful", "one-edit", "two-edits", "noisy")


def _edited(scene: Scene, times: int, rng: np.random.Generator, seed: int) -> np.ndarray:
    """Render `scene` with `times` successive contradicting edits, skipping edits the renderer cannot draw."""
    for _ in range(times):
        for _kind, candidate in edits(scene, rng):
            try:
                render(candidate, seed)
            except PromptError:
                continue
            scene = candidate
            break
    return render(scene, seed)


def draw(generator: str, prompt: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, TOY_GENERATORS.index(generator)])
    scene = parse(prompt)
    if generator == "faithful":
        return render(scene, seed)
    if generator == "one-edit":
        return _edited(scene, 1, rng, seed)
    if generator == "two-edits":
        return _edited(scene, 2, rng, seed)
    if generator == "noisy":
        image = render(scene, seed).astype(np.float32)
        image += rng.normal(0.0, 60.0, image.shape)
        return np.clip(image, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown toy generator {generator!r}; expected one of {TOY_GENERATORS}")


def make_toy_gallery(
    out: str | Path,
    prompts_per_aspect: int = 4,
    aspects: tuple[str, ...] = ("attribute_binding", "spatial_relationship", "non_spatial_relationship"),
    generators: tuple[str, ...] = TOY_GENERATORS,
    seeds: tuple[int, ...] = (0,),
    split: str = "train",
) -> list[ImageRecord]:
    """Write images and `manifest.jsonl` under `out`; returns the manifest records."""
    out = Path(out)
    records = []
    for aspect in aspects:
        for prompt in generate_prompts(aspect, split, prompts_per_aspect):
            pid = prompt_id(prompt)
            for generator in generators:
                for seed in seeds:
                    rel = f"images/{generator}/{pid}_s{seed}.png"
                    sha = save_png(out / rel, draw(generator, prompt, seed))
                    records.append(
                        ImageRecord(image_id(pid, generator, seed), pid, prompt, aspect, generator, seed, rel, sha)
                    )
    write_jsonl(out / MANIFEST, (r.to_dict() for r in records))
    return records
