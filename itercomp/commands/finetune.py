"""`itercomp finetune`: reward-feedback fine-tuning of the base model (or any supported pipeline), in-process."""

from __future__ import annotations


def register(parser) -> None:
    from itercomp.config import add_config_arguments
    from itercomp.finetune.config import FeedbackRunConfig

    parser.description = (
        "Reward-feedback fine-tuning with the reward models (--reward learned) or the shapes world's oracle "
        "(--reward oracle). grad_mode refl / draft / alignprop back-propagate the reward through a late window of "
        "sampling steps (IterComp's ReFL); select, dpo and grpo only rank samples (RAFT, Diffusion-DPO, "
        "Flow-GRPO). Flags are the fields of FeedbackRunConfig; for several processes use "
        "'accelerate launch recipes/reward_ft.py'."
    )
    add_config_arguments(parser, FeedbackRunConfig)
    parser.set_defaults(func=run)


def run(args) -> None:
    from itercomp.config import config_from_namespace
    from itercomp.finetune.config import FeedbackRunConfig
    from itercomp.finetune.job import run as run_job

    run_job(config_from_namespace(FeedbackRunConfig, args))
