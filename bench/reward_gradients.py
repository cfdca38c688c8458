"""Benchmark: are the reward models fit for reward *feedback* (their gradients), or only for *ranking*?

python bench/reward_gradients.py --prompts 60 --steps 100 --out bench/results/reward_gradients.json

Reward-feedback fine-tuning (ReFL, DRaFT, AlignProp) moves the generator along the reward model's gradient with
respect to the pixels. That only helps if a step up the reward is also a step toward what the oracle calls
correct. This measures it directly, with no generator in the way, per aspect on `--prompts` test prompts:

- **ascent**: the base model's samples are optimised in pixel space (Adam, `--lr` per step, `--steps` steps) on
  that aspect's reward model, optionally smoothed over `--smooth K` copies with Gaussian noise `--sigma` and a
  random shift of up to `--shift` pixels; the oracle scores the images before and at each `--report` step.
- **control**: the same ascent on minus the squared distance to a ground-truth render of the prompt, showing
  that this harness registers an improvement when the gradient points the right way.
- **best-of-N**: `--best-of` samples per prompt (seeds), the reward model picks one; oracle accuracy of the pick
  against a random pick (the first seed) and the best possible pick.

Writes JSON and prints a table. With the shipped models (see docs/iterate.md), rewards rise under ascent while
the oracle's accuracy falls, and best-of-N picks are better than random: the reward models rank well but their
pixel gradients are not aligned with the oracle, which is what limits the loop's reward-feedback fine-tuning.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from itercomp.io import write_json
from itercomp.models.evaluate import evaluation_prompts
from itercomp.models.pretrain import load_member
from itercomp.world import REWARD_ASPECTS, render
from itercomp.world.oracle import score
from reward_models.ensemble import RewardEnsemble

ROOT = Path(__file__).resolve().parents[1]


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 B x H x W x 3 -> float B x 3 x H x W in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def oracle(x: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    """Binary accuracy and mean soft score of images in [0, 1] (quantised to uint8 as a saved image would be)."""
    pixels = (x.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    verdicts = [score(image, prompt) for image, prompt in zip(pixels, prompts)]
    return {
        "accuracy": float(np.mean([v.correct for v in verdicts])),
        "score": float(np.mean([v.score for v in verdicts])),
    }


def smoothed(objective, sigma: float, copies: int, shift: int, generator: torch.Generator):
    """The objective averaged over noisy, shifted copies of the images (expectation over transformations)."""
    if copies <= 1 and sigma == 0 and shift == 0:
        return objective

    def wrapped(x):
        total = 0
        for _ in range(max(1, copies)):
            y = x + sigma * torch.randn(x.shape, generator=generator)
            if shift:
                dy, dx = torch.randint(-shift, shift + 1, (2,), generator=generator).tolist()
                y = torch.roll(y, (dy, dx), (2, 3))
            total = total + objective(y.clamp(0, 1))
        return total / max(1, copies)

    return wrapped


def ascend(x, prompts, objective, steps: int, lr: float, report: list[int]) -> list[dict]:
    """Adam on the pixels to raise `objective(x) -> per-image values`; oracle verdicts at the report steps."""
    x = x.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    rows = []
    for step in range(1, steps + 1):
        value = objective(x.clamp(0, 1))
        optimizer.zero_grad()
        (-value.mean()).backward()
        optimizer.step()
        if step in report:
            rows.append({"step": step, "objective": value.detach().mean().item(), **oracle(x, prompts)})
    return rows


def best_of_n(pipe, model, prompts: list[str], n: int, steps: int, guidance: float) -> dict[str, float]:
    """Oracle accuracy of the reward model's pick among n seeds per prompt, of the first seed, and of the best."""
    correct, rewards = [], []
    for seed in range(n):
        generators = [torch.Generator().manual_seed(seed * 100003 + k) for k in range(len(prompts))]
        images = pipe(
            prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generators, output_type="np"
        ).images
        correct.append([score(image, prompt).correct for image, prompt in zip(images, prompts)])
        with torch.no_grad():
            rewards.append(model.score(to_unit(images), prompts).numpy())
    correct, rewards = np.array(correct, dtype=float), np.array(rewards)  # n x prompts
    pick = rewards.argmax(0)
    return {
        "n": n,
        "first_seed": float(correct[0].mean()),
        "mean_seed": float(correct.mean()),
        "reward_pick": float(correct[pick, np.arange(len(prompts))].mean()),
        "oracle_best": float(correct.max(0).mean()),
    }


def measure(pipe, model, prompts: list[str], images: np.ndarray, args, generator: torch.Generator) -> dict:
    """One aspect: the oracle before, along the reward ascent and the control ascent, and best-of-N picks."""
    x = to_unit(images)
    reward = smoothed(lambda y: model.score(y, prompts), args.sigma, args.smooth, args.shift, generator)
    targets = to_unit(np.stack([render(p, seed=k) for k, p in enumerate(prompts)]))

    def closeness(y):
        return -(y - targets).square().flatten(1).mean(1)

    report = sorted(s for s in set(args.report) if 1 <= s <= args.steps)
    with torch.no_grad():
        start_reward = float(model.score(x, prompts).mean())
    result = {
        "before": {"reward": start_reward, **oracle(x, prompts)},
        "ascent": ascend(x, prompts, reward, args.steps, args.lr, report),
        "control": ascend(x, prompts, closeness, args.steps, args.lr, report),
    }
    if args.best_of:
        result["best_of_n"] = best_of_n(pipe, model, prompts, args.best_of, args.sample_steps, args.guidance)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=str(ROOT / "itercomp/weights/base"), help="the generator (pipeline folder)")
    parser.add_argument("--rewards", default=str(ROOT / "itercomp/weights/rewards"), help="reward models folder")
    parser.add_argument("--prompts", type=int, default=60, help="test prompts per aspect")
    parser.add_argument("--steps", type=int, default=100, help="ascent steps")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam step on pixels in [0, 1]")
    parser.add_argument(
        "--report", type=int, nargs="+", default=[3, 10, 30, 100], help="steps at which the oracle looks"
    )
    parser.add_argument("--smooth", type=int, default=1, help="noisy copies averaged per step (1 with --sigma 0: off)")
    parser.add_argument("--sigma", type=float, default=0.0, help="Gaussian noise of the smoothing copies")
    parser.add_argument("--shift", type=int, default=0, help="random shift (pixels) of the smoothing copies")
    parser.add_argument("--best-of", type=int, default=4, help="seeds per prompt for the best-of-N pick (0: skip)")
    parser.add_argument("--sample-steps", type=int, default=20, help="sampler steps of the base model")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance of the base model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "bench/results/reward_gradients.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not any(1 <= s <= args.steps for s in args.report):
        parser.error(f"--report needs at least one step between 1 and --steps ({args.steps})")

    pipe = load_member(Path(args.base))
    pipe.set_progress_bar_config(disable=True)
    steps, guidance = args.sample_steps, args.guidance
    ensemble = RewardEnsemble.from_pretrained(args.rewards).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    started = time.time()
    results = {}
    for aspect in REWARD_ASPECTS:
        prompts = [p for _, p in evaluation_prompts(args.prompts, "test", (aspect,))]
        generators = [torch.Generator().manual_seed(k) for k in range(len(prompts))]
        images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                      output_type="np").images  # fmt: skip
        results[aspect] = measure(pipe, ensemble.models[aspect], prompts, images, args, generator)
        r = results[aspect]
        print(f"{aspect}: oracle accuracy {r['before']['accuracy']:.3f} (reward {r['before']['reward']:+.2f})")
        for kind in ("ascent", "control"):
            trail = ", ".join(f"step {row['step']}: {row['accuracy']:.3f} ({row['objective']:+.3f})" for row in r[kind])
            print(f"  {kind:8s} {trail}")
        if args.best_of:
            b = r["best_of_n"]
            print(f"  best of {b['n']}: reward pick {b['reward_pick']:.3f}, first seed {b['first_seed']:.3f}, "
                  f"oracle best {b['oracle_best']:.3f}")  # fmt: skip
    write_json(Path(args.out), {"settings": vars(args), "seconds": round(time.time() - started, 1), "aspects": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
