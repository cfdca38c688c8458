"""`itercomp finetune`: reward-feedback fine-tuning of the base model (or any supported pipeline), in-process.

The reward is built here, outside the fine-tuning stage: the reward models of the weighted aspects
(`--reward learned`) or the shapes world's oracle (`--reward oracle`); `itercomp.finetune` takes it as a callable.
"""

from __future__ import annotations

from itercomp.finetune.job import WEIGHTS

SHIPPED_REWARDS = WEIGHTS / "rewards"


def register(parser) -> None:
    from itercomp.config import add_config_arguments
    from itercomp.finetune.config import FeedbackRunConfig

    parser.description = (
        "Reward-feedback fine-tuning with the reward models (--reward learned) or the shapes world's oracle "
        "(--reward oracle). grad_mode refl / draft / alignprop back-propagate the reward through a late window of "
        "sampling steps (IterComp's ReFL); select, dpo, grpo and awm only rank samples (RAFT, Diffusion-DPO, "
        "Flow-GRPO, advantage-weighted matching). Flags are the fields of FeedbackRunConfig, a mode's settings as --SECTION.FIELD (e.g. "
        "--grpo.group-size 8); for several processes use 'accelerate launch recipes/reward_ft.py'."
    )
    add_config_arguments(parser, FeedbackRunConfig)
    parser.set_defaults(func=run)


def run(args) -> None:
    from itercomp.config import config_from_namespace
    from itercomp.finetune.config import FeedbackRunConfig

    finetune_from_config(config_from_namespace(FeedbackRunConfig, args))


def load_reward_fn(config):
    """config.reward: the reward models of the weighted aspects (learned; the shipped ones unless config.rewards
    names a folder) or the shapes world's oracle (a perfect annotator, without gradient)."""
    aspects = [a for a, w in config.reward_weights.items() if w]  # the others would cost time and add nothing
    if config.reward == "oracle":
        from itercomp.finetune.oracle_reward import OracleReward

        return OracleReward(aspects)
    from reward_models.ensemble import RewardEnsemble

    return RewardEnsemble.from_pretrained(config.rewards or SHIPPED_REWARDS, aspects=aspects)


def finetune_from_config(config, accelerator=None) -> dict:
    """Load the pipeline, the reward and the prompts of a FeedbackRunConfig, then fine-tune."""
    from itercomp.finetune.job import load_pipeline, training_prompts
    from itercomp.finetune.trainer import finetune

    pipe = load_pipeline(config.pretrained, config.mixed_precision)
    reward_fn = load_reward_fn(config)
    prompts = training_prompts(config)
    return finetune(pipe, reward_fn, prompts, config, accelerator=accelerator)
