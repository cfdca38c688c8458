"""Reward-feedback fine-tuning of a text-to-image model with the three composition reward models (IterComp's ReFL).

    accelerate launch recipes/reward_ft.py --config recipes/configs/reward_ft_shapes.yaml [--field value ...]
    accelerate launch --multi_gpu --num_processes 8 recipes/reward_ft.py --config recipes/configs/reward_ft_sdxl.yaml
    python recipes/reward_ft.py --config FILE          # one process
    itercomp finetune --config FILE                    # the same, in-process

Every field of itercomp.finetune.config.FeedbackRunConfig is a YAML key and a `--field value` flag; a mode's
settings are a section (`grpo: {group_size: 8}` in YAML, `--grpo.group-size 8`). Writes <output_dir>/pipeline
(the fine-tuned pipeline), lora/ (LoRA runs), metrics.json and feedback_config.yaml.
"""

from __future__ import annotations

import sys

from itercomp.accelerators import end_processes
from itercomp.commands.finetune import load_reward_fn
from itercomp.config import load_config
from itercomp.errors import ItercompError
from itercomp.finetune.config import FeedbackRunConfig
from itercomp.finetune.job import load_pipeline, training_prompts


def main(argv: list[str] | None = None) -> int:
    from itercomp.accelerators import stage_accelerator, tracker_kwargs
    from itercomp.finetune.trainer import finetune

    try:
        config = load_config(FeedbackRunConfig, argv, description=__doc__)
        accelerator = stage_accelerator(
            cpu=config.cpu,
            mixed_precision=config.mixed_precision,
            **tracker_kwargs(config.report_to, config.output_dir),
        )
        # 1. the model to fine-tune: the shipped shapes base model unless --pretrained names another pipeline
        pipe = load_pipeline(config.pretrained, config.mixed_precision)
        # 2. the reward: the reward models of the weighted aspects, or the oracle with --reward oracle
        reward_fn = load_reward_fn(config)
        # 3. the prompts: --prompts FILE, or the shapes world's train split for each weighted aspect
        prompts = training_prompts(config)
        # 4. sample, score, step; writes output_dir/{pipeline, metrics.json, feedback_config.yaml}
        finetune(pipe, reward_fn, prompts, config, accelerator=accelerator)
    except ItercompError as e:
        sys.stderr.write(f"reward_ft: error: {e}\n")
        return 2
    finally:
        end_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
