"""Benchmark: does a base model read the spatial relation of its prompt at all?

python bench/relation_probe.py --prompts 40 --out bench/results/relation_probe.json [--member PATH ...]

On `--prompts` val spatial prompts "A <rel> B", three measurements per member:

- relation sensitivity of the x0 prediction from pure noise (t = 1 and a few high noise levels, where the layout
  is decided): x0(prompt) - x0(prompt with the relation flipped, left <-> right, above <-> below), same noise,
  projected on the colour difference c_A - c_B and correlated with the relation's axis, sign chosen so that the
  right layout scores positive. "ideal" is the same statistic of the mean of `--renders` ground-truth renders
  of each prompt (what E[x0 | prompt] is at t = 1).
- the sampled layout: the share of images (both objects found) whose A-B centroid offset has the sign the
  relation asks for (0.5 = the relation is ignored), and the mean offset along that axis in pixels;
- the flip test: the prompt and its flipped prompt sampled with the same seed; the share of pairs (both objects
  found in both images) that put A and B in the same order along the relation's axis. A model that reads the
  relation swaps them (0); one that ignores it draws the same layout (1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from itercomp.io import write_json
from itercomp.models.evaluate import evaluation_prompts
from itercomp.models.pretrain import load_member
from itercomp.world.oracle import _COLORS, find_blob, segment
from itercomp.world.render import render
from itercomp.world.scene import parse
from itercomp.world.vocab import COLORS

FLIP = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}
NOISE_LEVELS = (1.0, 0.95, 0.9)
PALETTE = torch.tensor(_COLORS, dtype=torch.float32) * 2 - 1  # background first, as the oracle's labels


def command_line(script: str, args) -> str:
    """The command that reproduces a run of bench/<script>.py with `args` (a switch only when it is on)."""
    flags = (
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {' '.join(v) if isinstance(v, list) else v}")
        for k, v in vars(args).items()
        if v is not False and v is not None
    )
    return f"python bench/{script}.py " + " ".join(flags)


def axis_and_sign(relation: str) -> tuple[int, int]:
    """(0 for x / 1 for y, +1 when A should sit at larger coordinates than B)."""
    return (0 if relation in ("to the left of", "to the right of") else 1), (
        -1 if relation in ("to the left of", "above") else 1
    )


def relation_statistic(difference: torch.Tensor, relation: str, color_a: str, color_b: str) -> float:
    """Mean over pixels of (difference . (c_A - c_B)) x (signed coordinate along the relation's axis)."""
    direction = PALETTE[1 + COLORS.index(color_a)] - PALETTE[1 + COLORS.index(color_b)]
    a_minus_b = (difference * direction[:, None, None]).sum(0)
    size = a_minus_b.shape[-1]
    coordinate = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    axis, sign = axis_and_sign(relation)
    along = coordinate[None, :] if axis == 0 else coordinate[:, None]
    return sign * float((a_minus_b * along).mean())


def centroids(image: np.ndarray, color_a: str, color_b: str):
    """(A's centre, B's centre) as the oracle finds them, or None when either colour is missing."""
    labels = segment(image)
    blob_a, blob_b = find_blob(labels, color_a), find_blob(labels, color_b)
    return None if blob_a is None or blob_b is None else (blob_a.center, blob_b.center)


def to_pixels(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def sampled_layout(pipe, prompt: str, seed: int, **sampling) -> tuple[float | None, bool | None]:
    """Sample the prompt and its flipped prompt with the same seed (and the pipeline's `sampling` arguments): A's
    offset from B along the relation's axis (positive = the named side) in the prompt's image, and whether the
    flipped prompt's image keeps A and B in the same order. None where an object is missing."""
    scene = parse(prompt)
    relation = scene.relations[0]
    a, b = scene.objects[relation.subject], scene.objects[relation.object]
    generators = [torch.Generator().manual_seed(seed) for _ in range(2)]
    images = pipe(
        [prompt, prompt.replace(relation.name, FLIP[relation.name])], generator=generators, output_type="np", **sampling
    )
    found, found_flipped = (centroids(image, a.color, b.color) for image in images.images)
    if found is None:
        return None, None
    axis, sign = axis_and_sign(relation.name)
    offset = sign * float(found[0][axis] - found[1][axis])
    if found_flipped is None:
        return offset, None
    return offset, bool(np.sign(offset) == np.sign(sign * (found_flipped[0][axis] - found_flipped[1][axis])))


@torch.no_grad()
def probe(pipe, prompts: list[str], noises: int, renders: int) -> dict:
    sensitivity = {t: [] for t in NOISE_LEVELS}
    ideal, hits, offsets, same_order = [], [], [], []
    for k, prompt in enumerate(prompts):
        scene = parse(prompt)
        relation = scene.relations[0]
        a, b = scene.objects[relation.subject], scene.objects[relation.object]
        flipped = prompt.replace(relation.name, FLIP[relation.name])
        mean = to_pixels([render(prompt, seed=s) for s in range(renders)]).mean(0)
        mean_flipped = to_pixels([render(flipped, seed=s) for s in range(renders)]).mean(0)
        ideal.append(relation_statistic(mean - mean_flipped, relation.name, a.color, b.color))
        hidden, mask = pipe.encode_prompt([prompt] * noises + [flipped] * noises, False)
        noise = torch.randn(noises, 3, 32, 32, generator=torch.Generator().manual_seed(k))
        for t in NOISE_LEVELS:
            x0 = pipe.transformer(torch.cat([noise, noise]), torch.full((2 * noises,), t * 1000), hidden, mask)
            difference = (x0[:noises] - x0[noises:]).mean(0)
            sensitivity[t].append(relation_statistic(difference, relation.name, a.color, b.color))
        offset, same = sampled_layout(pipe, prompt, seed=k)
        if offset is not None:
            hits.append(offset > 0)
            offsets.append(offset)
        if same is not None:
            same_order.append(same)
    return {
        "ideal_sensitivity": float(np.mean(ideal)),
        "sensitivity": {f"t={t}": float(np.mean(v)) for t, v in sensitivity.items()},
        "share_of_ideal_at_t=1": float(np.mean(sensitivity[1.0]) / np.mean(ideal)),
        "sampled_sign_right": float(np.mean(hits)) if hits else None,
        "sampled_offset_px": float(np.mean(offsets)) if offsets else None,
        "sampled_pairs_found": len(hits),
        "flip_same_order": float(np.mean(same_order)) if same_order else None,
        "flip_pairs_found": len(same_order),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", nargs="+", default=["itercomp/weights/base", "itercomp/weights/last_layer"])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--noises", type=int, default=8)
    parser.add_argument("--renders", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/relation_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = [p for _, p in evaluation_prompts(args.prompts, "val", ("spatial_relationship",))]
    results = {}
    for path in args.member:
        pipe = load_member(Path(path))
        pipe.set_progress_bar_config(disable=True)
        results[str(path)] = result = probe(pipe, prompts, args.noises, args.renders)
        print(path, result, flush=True)
    command = command_line("relation_probe", args)
    write_json(Path(args.out), {"command": command, "prompts": args.prompts, "split": "val", "members": results})


if __name__ == "__main__":
    main()
