"""The fine-tuning modes: one trainer class per family, found through a registry by `grad_mode`.

    window (refl, draft, alignprop)  back-propagate the reward through a late window of sampling steps
    select                           the denoising loss on each prompt's best sample (RAFT)
    dpo                              Diffusion-DPO on best vs worst samples and ranked pairs
    grpo                             Flow-GRPO on SDE sampling chains
    awm                              the denoising loss on each group's samples, weighted by advantage (AWM)

A mode is a `FeedbackMode` subclass (sampling and loss; `itercomp.finetune.modes.base`) with its settings in one
section dataclass of `FeedbackConfig` (`itercomp.finetune.config`). A new mode is one class plus one
`register_mode` call. This module imports no torch (the config checks `grad_mode` against it when the CLI builds
its --help); the trainer class is imported when training starts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from itercomp.errors import ItercompError


@dataclass(frozen=True)
class ModeSpec:
    trainer: str | type  # the FeedbackMode subclass, or "module:Class" to import it when training starts
    section: str  # the FeedbackConfig field that holds the mode's settings
    differentiates_reward: bool  # False: any black-box reward (the oracle) serves the mode


MODES: dict[str, ModeSpec] = {}


def register_mode(name: str, trainer: str | type, section: str, differentiates_reward: bool) -> None:
    """Make `grad_mode=name` train with the class `trainer` (a FeedbackMode subclass, or "module:Class" to keep
    torch out of the import) and the settings of the FeedbackConfig section `section`."""
    if name in MODES:
        raise ItercompError(f"grad_mode {name!r} is registered already (by {MODES[name].trainer})")
    MODES[name] = ModeSpec(trainer, section, differentiates_reward)


def mode_spec(name: str) -> ModeSpec:
    if name not in MODES:
        raise ItercompError(f"grad_mode={name!r} is unknown; use one of {', '.join(MODES)}")
    return MODES[name]


def mode_class(name: str) -> type:
    """The trainer class of `grad_mode=name` (imports torch)."""
    trainer = mode_spec(name).trainer
    if not isinstance(trainer, str):
        return trainer
    module, _, cls = trainer.partition(":")
    return getattr(importlib.import_module(module), cls)


def black_box_modes() -> tuple[str, ...]:
    """The modes that never differentiate the reward."""
    return tuple(name for name, spec in MODES.items() if not spec.differentiates_reward)


for _name in ("refl", "draft", "alignprop"):
    register_mode(_name, "itercomp.finetune.modes.window:WindowMode", "window", differentiates_reward=True)
register_mode("select", "itercomp.finetune.modes.select:SelectMode", "select", differentiates_reward=False)
register_mode("dpo", "itercomp.finetune.modes.dpo:DPOMode", "dpo", differentiates_reward=False)
register_mode("grpo", "itercomp.finetune.modes.grpo:GRPOMode", "grpo", differentiates_reward=False)
register_mode("awm", "itercomp.finetune.modes.awm:AWMMode", "awm", differentiates_reward=False)
