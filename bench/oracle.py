"""Benchmark: is the oracle right? Clean renders, renders under pixel noise, and one-edit negatives.

python bench/oracle.py --per-aspect 500 --out bench/results/oracle.json
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from itercomp.errors import PromptError
from itercomp.io import write_json
from itercomp.world.edits import edits
from itercomp.world.oracle import score
from itercomp.world.prompts import generate_prompts
from itercomp.world.render import render
from itercomp.world.scene import parse
from itercomp.world.vocab import ASPECTS


def noisy(image: np.ndarray, sigma: float, rng) -> np.ndarray:
    pixels = image.astype(np.float32) / 255.0 + rng.normal(0.0, sigma, image.shape)
    return np.clip(pixels, 0.0, 1.0)


def negative(scene, rng):
    """The first contradicting one-attribute edit of `scene` that can be drawn, with its render."""
    for kind, edited in edits(scene, rng):
        try:
            return kind, edited, render(edited, int(rng.integers(1 << 30)))
        except PromptError:
            continue
    return None


def run(per_aspect: int, sigma: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    stats = defaultdict(Counter)
    templates = Counter()
    started = time.perf_counter()
    jobs = [
        (a, p)
        for a in ASPECTS
        for split in ("train", "val", "test")
        for p in generate_prompts(a, split, per_aspect // 3 + (split == "train") * (per_aspect % 3), seed=seed)
    ]
    for k, (aspect, prompt) in enumerate(tqdm(jobs, desc="oracle", unit="prompt")):
        scene = parse(prompt)
        templates.update(r.name for r in scene.relations or [type("R", (), {"name": "and"})])
        image = render(scene, k)
        stats["clean"][aspect] += score(image, scene).correct
        stats["noisy"][aspect] += score(noisy(image, sigma, rng), scene).correct
        found = negative(scene, rng)
        if found:
            kind, _, bad = found
            stats["negatives"][aspect] += 1
            stats["negative_rejected"][aspect] += not score(bad, scene).correct
            stats["negative_kinds"][kind] += 1
    n = Counter(a for a, _ in jobs)
    total = len(jobs)
    neg_total = sum(stats["negatives"].values())
    return {
        "images": total,
        "per_aspect": {
            a: {
                "n": n[a],
                "clean_accuracy": stats["clean"][a] / n[a],
                "noisy_accuracy": stats["noisy"][a] / n[a],
                "negatives": stats["negatives"][a],
                "negative_rejection": stats["negative_rejected"][a] / max(1, stats["negatives"][a]),
            }
            for a in ASPECTS
        },
        "clean_accuracy": sum(stats["clean"].values()) / total,
        "noise_sigma": sigma,
        "noisy_accuracy": sum(stats["noisy"].values()) / total,
        "negatives": neg_total,
        "negative_rejection": sum(stats["negative_rejected"].values()) / max(1, neg_total),
        "negative_kinds": dict(stats["negative_kinds"]),
        "templates_and_relations": dict(templates),
        "seconds": time.perf_counter() - started,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-aspect", type=int, default=500)
    parser.add_argument("--sigma", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/oracle.json"))
    args = parser.parse_args()
    result = run(args.per_aspect, args.sigma, args.seed)
    write_json(args.out, result)
    print(f"clean renders:  {result['clean_accuracy']:.2%} right of {result['images']}")
    print(f"noise sigma={args.sigma}: {result['noisy_accuracy']:.2%} right")
    print(f"one-edit negatives: {result['negative_rejection']:.2%} called incorrect of {result['negatives']}")
    for aspect, r in result["per_aspect"].items():
        print(
            f"  {aspect:<26} clean {r['clean_accuracy']:.1%}  noisy {r['noisy_accuracy']:.1%}  "
            f"negatives rejected {r['negative_rejection']:.1%} of {r['negatives']}"
        )
    print(f"relations covered: {result['templates_and_relations']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
