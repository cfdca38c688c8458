"""Benchmark: the shipped base model and its two conditioning ablations, measured with the oracle.

python bench/base_model.py --prompts 100 --seeds 4 --out bench/results/base_model.json

For each member (base = deep fusion, pooled, last_layer): per-aspect binary accuracy and mean soft score on
`--prompts` test prompts per aspect x `--seeds` seeds, and sampling speed (images/s, batch `--batch-size`,
the members' own steps and guidance). Pretraining wall time comes from the run's timings.json (`--run`,
default runs/pretrain; it is what `itercomp pretrain` recorded, stage by stage). Also draws the same test
prompts and seeds for each member side by side (docs/base_model_samples.png).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from itercomp.grid import make_grid
from itercomp.io import write_json
from itercomp.models.evaluate import coverage, evaluate_pipeline, evaluation_prompts
from itercomp.models.pretrain import load_member, member_at_checkpoint
from itercomp.world import render
from itercomp.world.vocab import ASPECTS

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = ("base", "pooled", "last_layer")


def sampling_speed(pipe, prompts: list[str], batch_size: int, steps: int, guidance: float) -> float:
    pipe.set_progress_bar_config(disable=True)
    batch = (prompts * batch_size)[:batch_size]
    pipe(batch[:2], num_inference_steps=2, guidance_scale=guidance)  # warm-up
    started = time.perf_counter()
    pipe(batch, num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(0))
    return batch_size / (time.perf_counter() - started)


def sample_sheet(pipes: dict, path: Path, per_aspect: int = 3, steps: int = 20, guidance: float = 3.0) -> None:
    """Rows: the same test prompts; columns: members, then the ground truth render for reference."""
    from itercomp.world import render

    prompts = [p for _, p in evaluation_prompts(per_aspect, "test")]
    images, captions = [], []
    outputs = {}
    for name, pipe in pipes.items():
        generators = [torch.Generator().manual_seed(k) for k in range(len(prompts))]
        outputs[name] = pipe(
            prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generators, output_type="np"
        ).images
    for k, prompt in enumerate(prompts):
        for name in pipes:
            images.append(outputs[name][k])
            captions.append(f"{name}: {prompt}" if name == "base" else name)
        images.append(render(prompt, seed=k))
        captions.append("ground truth")
    make_grid(
        images,
        captions,
        columns=len(pipes) + 1,
        scale=4,
        caption_lines=5,
        title="the same test prompts and seeds per member (last column: a ground-truth render)",
    ).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=ROOT / "itercomp/weights", help="folder of shipped members")
    parser.add_argument("--members", nargs="+", default=list(MEMBERS))
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="a pretraining run folder: evaluate its deep-fusion DiT's EMA at the latest checkpoint (a point of the "
        "learning curve of a run in sittings) instead of --weights/--members",
    )
    parser.add_argument("--prompts", type=int, default=100, help="test prompts per aspect")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prompt")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--run", type=Path, default=ROOT / "runs/pretrain", help="pretraining run (timings.json)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/base_model.json")
    parser.add_argument("--sheet", type=Path, default=ROOT / "docs/base_model_samples.png")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    prompts = evaluation_prompts(args.prompts, "test")
    # What share of the canvas the binding prompts' objects cover in ground-truth renders (seed = prompt index).
    binding = [p for a, p in prompts if a == ASPECTS[0]]
    truth = float(np.mean([coverage(render(p, seed=k)) for k, p in enumerate(binding)]))
    results = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "members": {},
               "ground_truth_coverage_binding": truth}  # fmt: skip
    pipes = {}
    members = {name: None for name in args.members}
    if args.checkpoint:
        pipe, step = member_at_checkpoint(args.checkpoint)
        members = {"base": pipe}
        results["checkpoint"] = {"run": str(args.checkpoint), "step": step}
    for name, pipe in members.items():
        pipe = pipes[name] = pipe or load_member(args.weights / name)
        started = time.perf_counter()
        evaluation = evaluate_pipeline(
            pipe,
            prompts,
            seeds=range(args.seeds),
            batch_size=args.batch_size,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
        )
        seconds = time.perf_counter() - started
        speed = sampling_speed(pipe, [p for _, p in prompts], args.batch_size, args.steps, args.guidance)
        results["members"][name] = {
            "per_aspect": evaluation["summary"],
            "mean_accuracy_3_aspects": float(np.mean([evaluation["summary"][a]["accuracy"] for a in ASPECTS[:3]])),
            "images_per_second": round(speed, 1),
            "evaluation_seconds": round(seconds, 1),
            "parameters_dit": sum(p.numel() for p in pipe.transformer.parameters()),
            "parameters_lm": sum(p.numel() for p in pipe.text_encoder.parameters()),
        }
        print(
            f"{name}: "
            + ", ".join(f"{a} {evaluation['summary'][a]['accuracy']:.3f}" for a in ASPECTS)
            + f"; objects of binding prompts drawn {evaluation['summary'][ASPECTS[0]]['object_accuracy']:.3f}"
            + " (missed on "
            + ", ".join(f"{k} {v:.3f}" for k, v in evaluation["summary"][ASPECTS[0]]["object_misses"].items())
            + ")"
            + f"; coverage {evaluation['summary'][ASPECTS[0]]['coverage']:.3f} (ground truth {truth:.3f})"
            + f"; {speed:.0f} images/s"
        )
    timings = args.run / "timings.json"
    if timings.is_file():
        t = json.loads(timings.read_text())
        results["pretraining_minutes"] = {k: round(v / 60, 1) for k, v in t.items()}
        results["pretraining_minutes"]["total_training"] = round(
            sum(v for k, v in t.items() if k != "evaluation") / 60, 1
        )
    if "base" in results["members"] and "pooled" in results["members"]:
        base, pooled = results["members"]["base"]["per_aspect"], results["members"]["pooled"]["per_aspect"]
        results["deep_fusion_minus_pooled"] = {
            a: round(base[a]["accuracy"] - pooled[a]["accuracy"], 3) for a in ASPECTS
        }
    write_json(args.out, results)
    sample_sheet(pipes, args.sheet, steps=args.steps, guidance=args.guidance)

    print(
        f"\n| member | {' | '.join(ASPECTS)} | binding objects drawn | images/s |\n|---|{'---|' * (len(ASPECTS) + 2)}"
    )
    for name, r in results["members"].items():
        cells = " | ".join(f"{r['per_aspect'][a]['accuracy']:.3f}" for a in ASPECTS)
        objects = r["per_aspect"][ASPECTS[0]]["object_accuracy"]
        print(f"| {name} | {cells} | {objects:.3f} | {r['images_per_second']:.0f} |")
    print(f"\nwrote {args.out} and {args.sheet}")


if __name__ == "__main__":
    main()
