"""Benchmark: how fast can a DiT variant learn to read a spatial relation at all?

python bench/relation_learnability.py --steps 1200

The question isolated from everything else a base model must learn: at t = 1 (pure noise, where the layout is
chosen) the best x0 prediction for "A <rel> B" is the mean of the prompt's renders, which puts A's colour on the
named side. Each variant is a fresh DiT trained only there, on `--prompts` train spatial prompts (and their
mirrors), with the mean of `--renders` renders per prompt as the target. Every `--eval-every` steps it reports the
relation sensitivity of its x0 on val prompts as a share of the renders' mean (`bench/relation_probe.py`'s
statistic: 1 = the rule is read, 0 = ignored), and the share on train prompts (fit vs rule).

`--init` starts from the trained trunk of `--lm`'s member instead of fresh weights (can pretraining's DiT be taught
the rule afterwards?); `--min-t 0.9` trains at noise levels drawn from [0.9, 1] on x_t made from one fresh render,
the mean still the target (the layout expert's objective, `itercomp/models/layout_expert.py`); `--save DIR` keeps
the trained DiT.

A variant is a set of CompositionDiT options on the shipped trunk, which reads the shipped language model's
states, whitened. `base` is the shipped design. Commit fa89bd0 also had `positions` (learned absolute positions on
the LM states) and `joint` / `joint_positions` (an MMDiT text stream that every block updates jointly with the
image); docs/base_model.md has what they measured, and why they left.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from relation_probe import FLIP, command_line, relation_statistic  # noqa: E402  (a sibling bench script)
from tqdm import tqdm

from itercomp.io import write_json
from itercomp.models.data import mirror_prompt
from itercomp.models.dit import CompositionDiT, whitening_from_covariance
from itercomp.models.layout_expert import dit_options
from itercomp.models.pipeline import ShapesDiTPipeline
from itercomp.models.pretrain import PromptStates
from itercomp.models.training import flow_interpolate
from itercomp.world.prompts import generate_prompts
from itercomp.world.render import render
from itercomp.world.scene import parse

VARIANTS = {"base": {}}


def flipped(prompt: str) -> str:
    """The prompt with its relation reversed (left <-> right, above <-> below)."""
    name = parse(prompt).relations[0].name
    return prompt.replace(name, FLIP[name])


def mean_renders(prompts: list[str], renders: int) -> torch.Tensor:
    images = np.stack([np.mean([render(p, seed=s) for s in range(renders)], axis=0) for p in prompts])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def share_of_ideal(model, states: PromptStates, prompts: list[str], means: torch.Tensor, noises: int = 4) -> float:
    """Mean relation statistic of x0(prompt) - x0(flipped prompt) over that of the renders' means."""
    flips = [flipped(p) for p in prompts]
    got, ideal = [], []
    noise = torch.randn(noises, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for k, (p, f) in enumerate(zip(prompts, flips)):
        scene = parse(p)
        rel = scene.relations[0]
        a, b = scene.objects[rel.subject].color, scene.objects[rel.object].color
        hidden, mask = states([p] * noises + [f] * noises)
        x0 = model(torch.cat([noise, noise]), torch.full((2 * noises,), 1000.0), hidden, mask)
        got.append(relation_statistic((x0[:noises] - x0[noises:]).mean(0), rel.name, a, b))
        ideal.append(relation_statistic(means[k] - means[len(prompts) + k], rel.name, a, b))
    return float(np.mean(got) / np.mean(ideal))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--lm", default="itercomp/weights/base", help="a member whose tokenizer and LM to read")
    parser.add_argument("--init", action="store_true",
                        help="start from --lm's trained DiT (the shipped base) instead of a fresh one")  # fmt: skip
    parser.add_argument(
        "--min-t",
        type=float,
        default=1.0,
        help="train at t ~ U[min-t, 1] on x_t made from one fresh render (the target stays the mean)",
    )
    parser.add_argument("--save", default=None, help="save each variant's trained DiT under this folder")
    parser.add_argument("--prompts", type=int, default=1500, help="train spatial prompts (x2 with mirrors)")
    parser.add_argument("--eval-prompts", type=int, default=40, help="val spatial prompts")
    parser.add_argument("--renders", type=int, default=16, help="renders per prompt in its mean image")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/relation_learnability.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = ShapesDiTPipeline.from_pretrained(args.lm)
    shipped = pipe.transformer.config
    train = generate_prompts("spatial_relationship", "train", args.prompts, seed=1)
    train = train + [mirror_prompt(p) for p in train]
    val = generate_prompts("spatial_relationship", "val", args.eval_prompts)
    flip = [flipped(p) for p in val]
    probe_train = train[: args.eval_prompts]
    probe_train_flip = [flipped(p) for p in probe_train]
    started = time.perf_counter()
    means = mean_renders(train, args.renders)
    val_means = mean_renders(val + flip, args.renders)
    train_probe_means = torch.cat([means[: args.eval_prompts], mean_renders(probe_train_flip, args.renders)])
    print(f"rendered {len(train) + 2 * len(val)} means in {time.perf_counter() - started:.0f} s")
    layers = list(range(1, pipe.text_encoder.config.num_hidden_layers + 1))
    states = PromptStates(pipe.text_encoder, pipe.tokenizer, train + val + flip + probe_train_flip, layers)
    mean, covariance = states.statistics()
    results = {}
    for name in args.variants:
        torch.manual_seed(0)
        options = dict(
            sample_size=32, hidden_size=shipped.hidden_size, num_heads=shipped.num_heads,
            text_dim=shipped.text_dim, num_layers=shipped.num_layers,
            conv_channels=tuple(shipped.conv_channels), text_whitening=True, prediction_type="sample",
        )  # fmt: skip
        if args.init:  # the member's trunk, without its layout expert if it has one
            trained = CompositionDiT.from_pretrained(args.lm, subfolder="transformer").float()
            model = CompositionDiT(**dit_options(trained), **VARIANTS[name])
            model.load_state_dict({k: v for k, v in trained.state_dict().items() if not k.startswith("layout_dit.")})
        else:
            model = CompositionDiT(**options, **VARIANTS[name])
            model.set_text_statistics(mean, whitening_from_covariance(covariance))
        opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.99))
        curve, rng, started = [], np.random.default_rng(0), time.perf_counter()
        for step in tqdm(range(args.steps + 1), desc=name, unit="step"):
            if step % args.eval_every == 0:
                model.eval()
                point = {
                    "step": step,
                    "val_share": share_of_ideal(model, states, val, val_means),
                    "train_share": share_of_ideal(model, states, probe_train, train_probe_means),
                    "seconds": round(time.perf_counter() - started, 1),
                }
                curve.append(point)
                print(name, point, flush=True)
                model.train()
            if step == args.steps:
                break
            idx = rng.integers(len(train), size=args.batch_size)
            x_t = torch.randn(args.batch_size, 3, 32, 32)  # t = 1: pure noise
            hidden, mask = states([train[i] for i in idx])
            t = torch.ones(len(idx))
            if args.min_t < 1:
                t = args.min_t + (1 - args.min_t) * torch.rand(len(idx))
                seeds = rng.integers(2**31, size=len(idx))
                one = torch.from_numpy(np.stack([render(train[i], seed=int(k)) for i, k in zip(idx, seeds)]))
                x_t = flow_interpolate(one.permute(0, 3, 1, 2).float() / 127.5 - 1, x_t, t)
            x0 = model(x_t, t * 1000, hidden, mask)
            loss = (x0 - means[idx]).square().mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if args.save:
            model.save_pretrained(Path(args.save) / name)
        results[name] = {"options": VARIANTS[name], "parameters": sum(p.numel() for p in model.parameters()),
                         "curve": curve}  # fmt: skip
    command = command_line("relation_learnability", args)
    write_json(Path(args.out), {"command": command, "results": results})


if __name__ == "__main__":
    main()
