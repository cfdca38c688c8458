"""Benchmark: how much of the canvas a base model paints, against the ground truth.

python bench/object_coverage.py --members itercomp/weights/base runs/lever_B/members/base --out bench/results/object_coverage.json

On `--prompts` test binding prompts (one seed each, the evaluation's sampler settings) the share of non-background
pixels of each member's samples (`itercomp.models.evaluate.coverage`), beside that of one ground-truth render per
prompt. Binary accuracy and soft scores do not show a model that paints its objects far too large; this does. A
member is a pipeline folder, or a pretraining run folder (`checkpoints/base`: its EMA at the latest checkpoint).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from itercomp.io import write_json
from itercomp.models.evaluate import coverage, evaluation_prompts
from itercomp.models.pretrain import load_member, member_at_checkpoint
from itercomp.world.render import render


def load(path: Path):
    if (path / "config.yaml").is_file() and not (path / "model_index.json").is_file():
        return member_at_checkpoint(path)[0]
    return load_member(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=50, help="test binding prompts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/object_coverage.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = [p for _, p in evaluation_prompts(args.prompts, "test", ("attribute_binding",))]
    results = {"ground truth": float(np.mean([coverage(render(p, seed=k)) for k, p in enumerate(prompts)]))}
    for path in args.members:
        pipe = load(path)
        pipe.set_progress_bar_config(disable=True)
        generators = [torch.Generator().manual_seed(k) for k in range(len(prompts))]
        images = pipe(prompts, generator=generators, num_inference_steps=20, guidance_scale=3.0, output_type="np")
        results[str(path)] = float(np.mean([coverage(image) for image in images.images]))
    for name, value in results.items():
        print(f"{name:45s} {value:.3f}")
    write_json(args.out, {"command": "python bench/object_coverage.py --members " + " ".join(map(str, args.members))
                          + f" --prompts {args.prompts}", "prompts": args.prompts, "coverage": results})  # fmt: skip


if __name__ == "__main__":
    main()
