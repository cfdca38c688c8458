"""Reward-feedback fine-tuning of text-to-image denoisers (ReFL / DRaFT-K / AlignProp windows).

    from itercomp.finetune import FeedbackConfig, finetune
    metrics = finetune(pipe, reward_fn, prompts, FeedbackConfig(output_dir="runs/ft"))

Names resolve lazily so that importing the config (the CLI's --help) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FeedbackConfig": "itercomp.finetune.config",
    "FeedbackRunConfig": "itercomp.finetune.config",
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
