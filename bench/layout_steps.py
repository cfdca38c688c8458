"""Benchmark: which of the sampler's steps decide where the objects go?

python bench/layout_steps.py --member itercomp/weights/base --trunk --prompts 60

On `--prompts` val spatial prompts "A <rel> B", each sampled with the prompt and with its relation flipped at the
same seed (`bench/relation_probe.py`'s flip test and sampled side), while the member's x0 prediction for the prompt
is replaced by `alpha` x (the mean of `--renders` renders of the prompt) + (1 - alpha) x (its own) at every step
whose noise level is >= `cut`. The mean render is the best x0 at t = 1 and puts A on the side the relation names,
so the rows say how much of the relation the first steps must carry for the rest of the trajectory to follow it.
`--trunk` samples with the member's trunk alone (its layout expert, if any, left out): the base without the
expert. Each `--settings` entry is alpha:cut; alpha 0 is the member as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from relation_probe import FLIP, command_line, sampled_layout, to_pixels  # noqa: E402  (a sibling bench script)
from tqdm import tqdm

from itercomp.io import write_json
from itercomp.models.evaluate import evaluation_prompts
from itercomp.models.pretrain import load_member
from itercomp.world.render import render
from itercomp.world.scene import parse


class MeanAtHighNoise(torch.nn.Module):
    """The member's transformer with its x0 for the prompts (the first half of a guided batch) blended towards
    `means` at noise levels >= `cut`."""

    def __init__(self, model, alpha: float, cut: float, trunk: bool):
        super().__init__()
        self.model, self.alpha, self.cut, self.trunk = model, alpha, cut, trunk
        self.means: torch.Tensor | None = None

    def __call__(self, sample, timestep, hidden, mask):
        run = self.model._trunk if self.trunk else type(self.model).forward.__get__(self.model)
        out = run(sample, timestep.expand(len(sample)), hidden, mask)
        if self.alpha and float(timestep.flatten()[0]) >= 1000 * self.cut:
            n = len(self.means)
            out = torch.cat([self.alpha * self.means + (1 - self.alpha) * out[:n], out[n:]])
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", default="itercomp/weights/base")
    parser.add_argument("--trunk", action="store_true", help="leave the member's layout expert out")
    parser.add_argument("--settings", nargs="+", default=["0:1", "1:0.99", "1:0.9", "1:0.8", "0.5:0.9", "0.2:0.9"])
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--renders", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/layout_steps.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_member(Path(args.member))
    pipe.set_progress_bar_config(disable=True)
    model = pipe.transformer
    prompts = [p for _, p in evaluation_prompts(args.prompts, "val", ("spatial_relationship",))]
    means = {}
    for p in tqdm(prompts, desc="mean renders", leave=False):
        name = parse(p).relations[0].name
        pair = (p, p.replace(name, FLIP[name]))
        means[p] = torch.stack([to_pixels([render(q, seed=s) for s in range(args.renders)]).mean(0) for q in pair])
    rows = []
    for setting in args.settings:
        alpha, cut = (float(v) for v in setting.split(":"))
        blended = MeanAtHighNoise(model, alpha, cut, args.trunk)
        pipe.transformer.forward = blended.__call__  # the pipeline calls its registered transformer
        right, same = [], []
        for k, prompt in enumerate(tqdm(prompts, desc=setting, leave=False)):
            blended.means = means[prompt]
            offset, kept = sampled_layout(pipe, prompt, seed=k)
            if offset is not None:
                right.append(offset > 0)
            if kept is not None:
                same.append(kept)
        del pipe.transformer.forward
        rows.append({"alpha": alpha, "cut": cut, "sampled_sign_right": float(np.mean(right)),
                     "flip_same_order": float(np.mean(same)), "flip_pairs_found": len(same)})  # fmt: skip
        print(rows[-1], flush=True)
    command = command_line("layout_steps", args)
    write_json(Path(args.out), {"command": command, "member": args.member, "trunk": args.trunk, "rows": rows})


if __name__ == "__main__":
    main()
