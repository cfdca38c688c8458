"""Reward-feedback fine-tuning of text-to-image denoisers: one loop (`finetune`) and one trainer class per mode
family (`itercomp.finetune.modes`: window = refl / draft / alignprop, select, dpo, grpo, awm), each with its settings in
a section of `FeedbackConfig`.

    from itercomp.finetune import FeedbackConfig, GRPOConfig, finetune
    config = FeedbackConfig(output_dir="runs/ft", grad_mode="grpo", grpo=GRPOConfig(group_size=8))
    metrics = finetune(pipe, reward_fn, prompts, config)

The reward is built by the caller (`itercomp.commands.finetune.load_reward_fn` for the CLI and the recipe).
Names resolve lazily so that importing the config (the CLI's --help) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FeedbackConfig": "itercomp.finetune.config",
    "FeedbackRunConfig": "itercomp.finetune.config",
    "WindowConfig": "itercomp.finetune.config",
    "SelectConfig": "itercomp.finetune.config",
    "DPOConfig": "itercomp.finetune.config",
    "GRPOConfig": "itercomp.finetune.config",
    "register_mode": "itercomp.finetune.modes",
    "FeedbackMode": "itercomp.finetune.modes.base",
    "finetune": "itercomp.finetune.trainer",
    "feedback_loss": "itercomp.finetune.loss",
    "gradient_steps": "itercomp.finetune.loss",
    "make_adapter": "itercomp.finetune.adapters",
    "ArrayPairs": "itercomp.finetune.regulariser",
    "FolderPairs": "itercomp.finetune.regulariser",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'itercomp.finetune' has no attribute {name!r}")
