"""Benchmark of the model gallery.

(a) per-member, per-aspect oracle accuracy of gallery/shapes.yaml (the members that can load here);
(b) images/s of `itercomp gallery generate`;
(c) on one tiny random StableDiffusionPipeline, side by side in one run: the original IterComp way (the
    pipeline re-loaded for every image, batch 1) against `itercomp gallery generate` (loaded once, batched).

OMP_NUM_THREADS=1 python bench/gallery_members.py --per-aspect 100 --images-per-prompt 2 --out bench/results/gallery.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # diffusers imports warn about torchvision, unused here

import numpy as np
import yaml
from PIL import Image

from gallery.spec import load_gallery
from gallery.tiny import TINY_CALL, save_tiny_pipeline
from itercomp.cli import main as itercomp
from itercomp.io import read_json, read_jsonl, write_json
from itercomp.world.oracle import score
from itercomp.world.prompts import generate_prompts
from itercomp.world.vocab import ASPECTS

SHAPES_GALLERY = Path(__file__).resolve().parents[1] / "gallery" / "shapes.yaml"


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a binomial proportion (stays inside [0, 1] at 0 and 1)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class Clock:
    """Wall time and this process's CPU time. The machine is shared, so wall time swings with other people's
    jobs; with one torch thread, CPU time is the work done and compares fairly across a run."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def generate(argv: list[str]) -> Clock:
    """Run `itercomp gallery generate ...` in this process, timed."""
    with Clock() as clock:
        code = itercomp(["gallery", "generate", *argv])
    if code != 0:
        raise SystemExit(f"itercomp gallery generate {' '.join(argv)} failed with exit code {code}")
    return clock


def accuracy_table(work: Path, per_aspect: int, images_per_prompt: int, split: str) -> dict:
    prompts = work / "prompts.jsonl"
    rows = [{"prompt": p, "aspect": a} for a in ASPECTS for p in generate_prompts(a, split, per_aspect)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = work / "shapes"
    argv = ["--gallery", str(SHAPES_GALLERY), "--prompts", str(prompts), "--images-per-prompt", str(images_per_prompt)]
    wall = generate([*argv, "--skip-unavailable", "--out", str(out)]).wall
    run = read_json(out / "run.json")
    counts = defaultdict(lambda: [0, 0, 0.0])  # (member, aspect) -> correct, total, soft sum
    for record in read_jsonl(out / "manifest.jsonl"):
        verdict = score(Image.open(out / record["path"]), record["prompt"])
        cell = counts[(record["generator"], record["aspect"])]
        cell[0] += verdict.correct
        cell[1] += 1
        cell[2] += verdict.score
    members = [m["name"] for m in run["members"]]
    table = {}
    for member in members:
        table[member] = {}
        for aspect in ASPECTS:
            correct, total, soft = counts[(member, aspect)]
            low, high = wilson(correct, total)
            table[member][aspect] = {
                "accuracy": round(correct / total, 4),
                "ci95": [round(low, 4), round(high, 4)],
                "soft_score": round(soft / total, 4),
                "images": total,
            }
    best = {a: max(members, key=lambda m: table[m][a]["accuracy"]) for a in ASPECTS}
    return {
        "command": f"itercomp gallery generate {' '.join(argv)} --skip-unavailable --out DIR".replace(
            str(prompts), "PROMPTS.jsonl"
        ),
        "split": split,
        "prompts_per_aspect": per_aspect,
        "images_per_prompt": images_per_prompt,
        "members": members,
        "skipped_members": run["skipped_members"],
        "table": table,
        "best_per_aspect": best,
        "no_member_best_everywhere": len(set(best.values())) > 1,
        "throughput": {
            "images": run["rendered"],
            "render_images_per_second": run["images_per_second"],
            "end_to_end_seconds": round(wall, 3),
            "end_to_end_images_per_second": round(run["rendered"] / wall, 2),
        },
    }


def reload_per_image(model: Path, jobs: list[tuple[str, int]], steps: int, dtype: str, out: Path) -> Clock:
    """The original IterComp way: a fresh `from_pretrained` for every image, batch 1, then save the image."""
    import torch
    from diffusers import StableDiffusionPipeline

    out.mkdir(parents=True, exist_ok=True)
    with Clock() as clock:
        for k, (prompt, seed) in enumerate(jobs):
            pipe = StableDiffusionPipeline.from_pretrained(model, dtype=getattr(torch, dtype)).to("cpu")
            pipe.set_progress_bar_config(disable=True)
            image = pipe(
                prompt,
                generator=torch.Generator().manual_seed(seed),
                num_inference_steps=steps,
                **TINY_CALL["stable_diffusion"],
            ).images[0]
            image.save(out / f"{k}.png")
    return clock


def speed_comparison(work: Path, prompts: int, images_per_prompt: int, steps: int, dtype: str, batch_size: int) -> dict:
    work = work / f"{dtype}_{steps}steps"
    model = save_tiny_pipeline("stable_diffusion", work / "tiny_sd")
    texts = generate_prompts("attribute_binding", "train", prompts)
    jobs = [(p, s) for p in texts for s in range(images_per_prompt)]
    original = reload_per_image(model, jobs, steps, dtype, work / "original")

    member = {
        "name": "tiny_sd",
        "type": "diffusers",
        "model": "./tiny_sd",
        "pipeline": "StableDiffusionPipeline",
        "dtype": dtype,
        "call": {"num_inference_steps": steps, **TINY_CALL["stable_diffusion"]},
        "batch_size": batch_size,
    }
    gallery = work / "tiny_gallery.yaml"
    gallery.write_text(yaml.safe_dump({"name": "tiny", "members": [member]}, sort_keys=False))
    prompt_file = work / "tiny_prompts.txt"
    prompt_file.write_text("\n".join(texts) + "\n")
    out = work / "ours"
    argv = ["--gallery", str(gallery), "--prompts", str(prompt_file), "--images-per-prompt", str(images_per_prompt)]
    ours = generate([*argv, "--out", str(out)])

    # Same work on both sides: the same seeds give the same pictures (batching may round a pixel differently).
    records = read_jsonl(out / "manifest.jsonl")
    by_key = {(r["prompt"], r["seed"]): r["path"] for r in records}
    diffs = [
        np.abs(
            np.asarray(Image.open(work / "original" / f"{k}.png"), dtype=int)
            - np.asarray(Image.open(out / by_key[job]), dtype=int)
        ).max()
        for k, job in enumerate(jobs)
    ]
    n = len(jobs)
    return {
        "pipeline": "tiny random StableDiffusionPipeline (gallery/tiny.py), 32x32 px",
        "images": n,
        "num_inference_steps": steps,
        "dtype": dtype,
        "batch_size_ours": batch_size,
        "original_seconds": round(original.wall, 3),
        "ours_seconds": round(ours.wall, 3),
        "original_cpu_seconds": round(original.cpu, 3),
        "ours_cpu_seconds": round(ours.cpu, 3),
        "original_images_per_second": round(n / original.wall, 2),
        "ours_images_per_second": round(n / ours.wall, 2),
        "original_images_per_cpu_second": round(n / original.cpu, 2),
        "ours_images_per_cpu_second": round(n / ours.cpu, 2),
        "speedup_wall": round(original.wall / ours.wall, 2),
        "speedup_cpu": round(original.cpu / ours.cpu, 2),
        "max_pixel_difference": int(max(diffs)),
        "ours_command": f"itercomp gallery generate {' '.join(argv)} --out DIR",
    }


def print_report(report: dict) -> None:
    acc = report["accuracy"]
    aspects = list(ASPECTS)
    print(
        f"\noracle accuracy per member and aspect ({acc['split']} split, {acc['prompts_per_aspect']} prompts x "
        f"{acc['images_per_prompt']} images per aspect)"
    )
    print(f"{'member':<16}" + "".join(f"{a:>26}" for a in aspects))
    for member, row in acc["table"].items():
        cells = "".join(
            f"{row[a]['accuracy']:>12.2f} [{row[a]['ci95'][0]:.2f}, {row[a]['ci95'][1]:.2f}]" for a in aspects
        )
        print(f"{member:<16}{cells}")
    print("best per aspect: " + ", ".join(f"{a}: {m}" for a, m in acc["best_per_aspect"].items()))
    if acc["skipped_members"]:
        print("not measured (cannot load here): " + ", ".join(acc["skipped_members"]))
    t = acc["throughput"]
    print(
        f"\ngallery generate: {t['images']} images, {t['render_images_per_second']} img/s rendering, "
        f"{t['end_to_end_images_per_second']} img/s end to end (manifest, grids included)"
    )
    for s in report["speed"]:
        print(f"\ntiny SD, {s['images']} images, {s['num_inference_steps']} steps, {s['dtype']}:")
        for label, key in (("re-load per image, batch 1", "original"), ("itercomp gallery generate", "ours")):
            print(
                f"  {label:<27} wall {s[key + '_seconds']:>7.2f} s {s[key + '_images_per_second']:>7.2f} img/s   "
                f"cpu {s[key + '_cpu_seconds']:>7.2f} s {s[key + '_images_per_cpu_second']:>7.2f} img/cpu-s"
            )
        print(
            f"  speed-up {s['speedup_cpu']}x in CPU time, {s['speedup_wall']}x in wall time "
            f"(max pixel difference between the two ways: {s['max_pixel_difference']})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-aspect", type=int, default=100, help="prompts per aspect for the accuracy table")
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--split", default="val")
    parser.add_argument("--sd-prompts", type=int, default=64, help="prompts for the tiny SD comparison")
    parser.add_argument("--sd-images-per-prompt", type=int, default=4)
    parser.add_argument(
        "--sd-settings",
        nargs="+",
        default=["bfloat16:2", "float32:2"],
        help="DTYPE:STEPS, one comparison each (both sides use the same); the first is the headline",
    )
    parser.add_argument("--sd-batch-size", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both ways (1: CPU time compares fairly on a shared machine; 2: all of this machine)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/gallery.json"))
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["accuracy", "speed"],
        default=["accuracy", "speed"],
        help="what to measure; a part left out keeps its previous result in --out (each part records its command)",
    )
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    load_gallery(SHAPES_GALLERY)  # fail early on a broken spec
    arguments = " ".join(sys.argv[1:] if argv is None else argv)
    command = f"OMP_NUM_THREADS={args.threads} python bench/gallery_members.py {arguments}"
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    missing = [part for part in ("accuracy", "speed") if part not in args.parts and part not in previous]
    if missing:
        parser.error(f"{args.out} has no {missing} result to keep; include {missing} in --parts")
    with tempfile.TemporaryDirectory(prefix="bench_gallery_") as tmp:
        work = Path(tmp)
        report = {"torch_threads": torch.get_num_threads(), **{k: previous[k] for k in ("accuracy", "speed")
                                                                if k not in args.parts}}  # fmt: skip
        if "accuracy" in args.parts:
            report["accuracy"] = accuracy_table(work, args.per_aspect, args.images_per_prompt, args.split)
            report["accuracy"]["bench_command"] = command
        if "speed" in args.parts:
            report["speed"] = [
                {
                    **speed_comparison(
                        work, args.sd_prompts, args.sd_images_per_prompt, int(steps), dtype, args.sd_batch_size
                    ),
                    "bench_command": command,
                }  # fmt: skip
                for dtype, steps in (setting.split(":") for setting in args.sd_settings)
            ]
    write_json(args.out, report)
    print_report(report)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
