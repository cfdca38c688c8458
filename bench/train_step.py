"""Benchmark: how fast one DiT training step runs on this CPU, and what bf16 autocast and torch.compile buy.

python bench/train_step.py --modes eager bf16 compile compile_bf16 --out bench/results/train_step.json

One step = forward, x0 loss, backward, AdamW, on random inputs of the shipped shapes (batch, 32 x 32 images, one
hidden-state tensor per LM layer) with the DiT of `recipes/configs/pretrain_shapes.yaml` and the shipped LM's
config. The pretraining budget is counted in these steps: three DiTs share the two cores, so the step time
decides how many steps each gets in 90 minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from itercomp.config import load_config
from itercomp.io import write_json
from itercomp.models.config import PretrainConfig
from itercomp.models.pretrain import build_dit, load_member

ROOT = Path(__file__).resolve().parents[1]
MODES = ("eager", "bf16", "compile", "compile_bf16")


def time_steps(
    cfg: PretrainConfig, lm, mode: str, batch_size: int, steps: int, tokens: int = 16, warmup: int = 3
) -> dict:
    """Seconds per training step of a fresh DiT in `mode` (and the time of the first `warmup` steps)."""
    torch.manual_seed(0)
    model = build_dit(cfg, "deep_fusion", lm)
    forward = torch.compile(model) if mode.startswith("compile") else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    x0 = torch.randn(batch_size, 3, cfg.canvas, cfg.canvas)
    t = torch.rand(batch_size) * 1000
    hidden = tuple(
        torch.randn(batch_size, tokens, lm.config.hidden_size) for _ in range(lm.config.num_hidden_layers + 1)
    )
    mask = torch.ones(batch_size, tokens, dtype=torch.bool)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.endswith("bf16")):
            output = forward(x0, t, hidden, mask)
        (output.float() - x0).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    return {
        "ms_per_step": round(seconds * 1000, 1),
        "images_per_second": round(batch_size / seconds, 1),
        "warmup_seconds": round(warmup_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "recipes/configs/pretrain_shapes.yaml")
    parser.add_argument("--lm", type=Path, default=ROOT / "itercomp/weights/base", help="a member (its LM is used)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--text-tokens", type=int, default=16, help="caption length in tokens (a two-object prompt)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (pretraining runs one per DiT)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/train_step.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(PretrainConfig, ["--config", str(args.config)])
    batch_size = args.batch_size or cfg.batch_size
    lm = load_member(args.lm).text_encoder.float()
    results = {}
    for mode in args.modes:
        results[mode] = time_steps(cfg, lm, mode, batch_size, args.steps, args.text_tokens)
        print(f"{mode}: {results[mode]}", flush=True)
    base = results.get("eager")
    if base:
        for r in results.values():
            r["speedup_over_eager"] = round(base["ms_per_step"] / r["ms_per_step"], 2)
    settings = {
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "batch_size": batch_size,
        "steps": args.steps,
        "threads": args.threads,
        "text_tokens": args.text_tokens,
    }
    write_json(args.out, {"settings": settings, "modes": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
