"""Composition-aware reward models: one per aspect, trained on rankings, scoring images differentiably.

from reward_models import RewardEnsemble, RewardModel

Names resolve lazily so that importing the configs (the CLI's --help) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"RewardEnsemble": "reward_models.ensemble", "RewardModel": "reward_models.model"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reward_models' has no attribute {name!r}")
