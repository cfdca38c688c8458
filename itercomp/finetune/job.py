"""What the recipe and `itercomp finetune` load before calling finetune(): the pipeline and the prompts, with
errors that say what is missing and how to get it. The reward is built by the caller
(`itercomp.commands.finetune.load_reward_fn`): this stage does not import the reward models."""

from __future__ import annotations

import json
from pathlib import Path

from itercomp.errors import ItercompError
from itercomp.finetune.config import FeedbackRunConfig

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SHIPPED_BASE = WEIGHTS / "base"


def load_pipeline(path: str | None, mixed_precision: str = "no"):
    """A pipeline folder (ShapesDiTPipeline or any diffusers pipeline) or a hub id; unset = the shipped base.
    The denoiser loads in float32 (the trained weights' master copy); under mixed precision every other
    component loads in its dtype, so a large text encoder never exists in float32."""
    import torch
    from diffusers import DiffusionPipeline

    import itercomp.models.dit  # noqa: F401  (diffusers loads CompositionDiT only from an imported module)
    from itercomp.models.pipeline import ShapesDiTPipeline

    if path is None:
        if not (SHIPPED_BASE / "model_index.json").is_file():
            raise ItercompError(
                f"no shipped base model at {SHIPPED_BASE}; train it with 'itercomp pretrain' "
                "or pass --pretrained PATH (a pipeline folder or hub id)"
            )
        path = str(SHIPPED_BASE)
    folder = Path(path)
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            raise ItercompError(
                f"{folder} is not a pipeline folder (no model_index.json); save one with save_pretrained"
            )
        if json.loads(index.read_text()).get("_class_name") == ShapesDiTPipeline.__name__:
            return ShapesDiTPipeline.from_pretrained(folder)
    elif path.startswith(("/", ".", "~")):
        raise ItercompError(f"pretrained={path}: no such folder; give a pipeline folder or a hub id")
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
    dtype = {"default": weight_dtype, "unet": torch.float32, "transformer": torch.float32}
    try:
        return DiffusionPipeline.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ItercompError(
            f"could not load a pipeline from {path!r} ({first}); give a pipeline folder or hub id"
        ) from None


def training_prompts(config: FeedbackRunConfig) -> list[str]:
    """--prompts FILE (.txt one per line, or .jsonl rows with "prompt"), else shapes-world train prompts of each
    weighted reward aspect (test prompts are never used for fine-tuning)."""
    if config.prompts:
        from itercomp.prompts import read_prompt_file

        return [row["prompt"] for row in read_prompt_file(config.prompts)]
    from itercomp.world import ASPECTS, generate_prompts

    aspects = [a for a, w in config.reward_weights.items() if w and a in ASPECTS]
    if not aspects:
        raise ItercompError(
            f"no shapes-world aspect among reward_weights {sorted(config.reward_weights)}; pass --prompts FILE"
        )
    return [p for a in aspects for p in generate_prompts(a, "train", config.prompts_per_aspect, seed=config.seed)]
