"""`itercomp finetune`: reward-feedback fine-tuning of the base model (or any supported pipeline), in-process."""

from __future__ import annotations


def register(parser) -> None:
    from itercomp.config import add_config_arguments
    from itercomp.finetune.config import FeedbackRunConfig

    parser.description = (
        "Sample without gradient, run a late window of steps with gradient, score x0 with the three reward "
        "models, step on sum_a w_a * relu(hinge - r_a) * scale. Flags are the fields of FeedbackRunConfig; "
        "for several processes use 'accelerate launch recipes/reward_ft.py'."
    )
    add_config_arguments(parser, FeedbackRunConfig)
    parser.set_defaults(func=run)


def run(args) -> None:
    from itercomp.config import config_from_namespace
    from itercomp.finetune.config import FeedbackRunConfig
    from itercomp.finetune.job import run as run_job

    run_job(config_from_namespace(FeedbackRunConfig, args))
