"""Composition-aware reward models: one per aspect, trained on rankings, scoring images differentiably.

from reward_models import RewardEnsemble, RewardModel
"""

from reward_models.ensemble import RewardEnsemble
from reward_models.model import RewardModel

__all__ = ["RewardEnsemble", "RewardModel"]
