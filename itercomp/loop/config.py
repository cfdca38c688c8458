"""`IterateConfig`: every setting of `itercomp iterate`, from a YAML file plus flags (itercomp.config's loader).

Two sections pass settings to the stages' own configs: `rewards:` (RewardTrainConfig, to refine the reward models)
and `finetune:` (FeedbackConfig), mappings in YAML and `--rewards epochs=2`, `--finetune max_steps=40` on the
command line. Fine-tuning starts from a recipe (`finetune_recipe`: recipes/configs/reward_ft_shapes.yaml), then the
base member's sampling steps and guidance, then the `finetune:` section, typed and checked once by the fine-tuning
config class. The loop sets what ties a stage into the run layout (data, output folders, starting models).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from itercomp import config as loader
from itercomp.errors import ItercompError
from itercomp.loop.prompts import PromptSources

ANNOTATOR_MODES = ("simulated", "human")
MINIMUM = {  # the least value of each number setting (an unset target_rankings has none)
    **dict.fromkeys(("prompts_per_aspect", "val_prompts_per_aspect", "images_per_prompt", "current_model_seeds",
                     "overlap", "simulated_annotators", "finetune_prompts_per_aspect", "eval_prompts_per_aspect",
                     "eval_batch_size", "target_rankings", "num_processes"), 1),
    "rounds": 0, "grid_prompts": 0, "temperature": 0, "human_wait_minutes": 0,
}  # fmt: skip
# Set by the loop per round and stage; a section that sets them would break the run layout.
RESERVED = {"rewards": ("rankings", "output_dir", "aspects", "init_from"), "finetune": ("output_dir",)}
# Settings that may differ when a run is resumed: how far to go and how to wait, not what is computed.
RESUMABLE = ("rounds", "human_wait_minutes", "human_serve", "serve_host", "serve_port", "guidelines", "threads",
             "num_processes")  # fmt: skip
SHIPPED = "shipped"  # `reward_init` value meaning the reward models shipped in the package
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "configs"
# A recipe's own run (its output folder, seed and machine) is not the loop's: the loop sets those per round.
RECIPE_RUN_KEYS = ("output_dir", "seed", "cpu", "threads")


def shipped_rewards() -> Path:
    return Path(__file__).resolve().parents[1] / "weights" / "rewards"


def reward_backbone(rewards: dict, reward_init: str | None) -> str:
    """The reward models' backbone: the `rewards:` section's, else the starting models' (reward_init), else shapes."""
    if rewards.get("backbone"):
        return rewards["backbone"]
    if reward_init and reward_init != SHIPPED:
        config = next(Path(reward_init).glob("*/config.json"), None)
        if config is not None:
            return json.loads(config.read_text()).get("backbone", "shapes")
    return "shapes"


def _round_budget() -> dict:
    # Each round fine-tunes 200 steps at half the recipe's batch (and a smaller evaluation batch): three rounds
    # take about 20 minutes on two CPU cores (`make demo` runs 100 a round to fit its budget); everything else,
    # the mode and learning rate included, is the recipe's.
    return {"max_steps": 200, "batch_size": 4, "eval_prompts": 16, "checkpoint_every": 25}


def _f(default, text: str):
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return field(**factory, metadata={"help": text})


@dataclass
class IterateConfig:
    """The iterative loop: gallery -> rankings -> reward models -> fine-tuning -> evaluation -> expansion."""

    aliases: ClassVar[dict[str, str]] = {"out": "output_dir"}

    rounds: int = _f(3, "rounds of the loop (round 0 is the base model's evaluation)")
    output_dir: str = _f("runs/iterate", "run folder (round_<k>/, report.json, pictures)")
    seed: int = _f(0, "seed of prompts, gallery seeds, annotators and training")
    threads: int | None = _f(None, "torch CPU threads (default: torch's choice)")
    num_processes: int = _f(1, "processes every stage runs on: > 1 reruns the loop under `accelerate launch` (the "
                            "gallery and evaluation sharded, reward training and fine-tuning in DDP; one GPU each, or "
                            "gloo on CPUs)")  # fmt: skip
    # gallery
    gallery: str = _f("shapes", "gallery YAML file or shipped gallery name")
    members: tuple[str, ...] | None = _f(None, "gallery members to use (default: all); must include base_member")
    base_member: str = _f("base", "the gallery member that is fine-tuned (a `type: diffusers` member)")
    skip_unavailable: bool = _f(False, "leave out gallery members whose weights are not here instead of failing")
    prompts: PromptSources = _f(PromptSources, "where the ranking, fine-tuning and test prompts come from: the shapes "
                                "world, or files (prompts.source=files, prompts.ranking=..., prompts.test=...)")  # fmt: skip
    prompts_per_aspect: int = _f(24, "new train-split prompts per aspect ranked each round")
    val_prompts_per_aspect: int = _f(6, "new val-split prompts per aspect ranked each round (reward validation)")
    images_per_prompt: int = _f(1, "images per prompt and gallery member (seeds)")
    current_model_seeds: int = _f(4, "seeds per prompt of the current model (the base, then the latest fine-tuned "
                                  "one) in each round's rankings: same-model pairs, as reward feedback compares")  # fmt: skip
    # rankings
    annotators: str = _f("simulated", "simulated (oracle + Plackett-Luce noise) or human (the annotation app)")
    task_aspects: str = _f("own", "own: rank a prompt for its own aspect (IterComp); all: for all three")
    overlap: int = _f(1, "rankings per task (annotators per prompt and aspect)")
    simulated_annotators: int = _f(3, "number of simulated annotators")
    temperature: float = _f(0.05, "simulated annotators' noise (0 = the oracle's order)")
    target_rankings: int | None = _f(None, "human mode: rankings needed to go on (default: every task x overlap)")
    annotation_db: str | None = _f(None, "SQLAlchemy URL for all rounds (default: SQLite in each round's rankings/)")
    human_wait_minutes: float = _f(0.0, "human mode: wait this long for rankings (0: exit at once, resume later)")
    human_serve: bool = _f(True, "human mode: serve the ranking app from this process while waiting")
    serve_host: str = _f("127.0.0.1", "human mode: address of the ranking app")
    serve_port: int = _f(7860, "human mode: port of the ranking app")
    guidelines: str | None = _f(None, "human mode: the annotators' guidelines per aspect, a YAML file or a shipped "
                                "name (shapes, real_images; default: the shapes world's)")  # fmt: skip
    # reward models
    reward_init: str | None = _f(SHIPPED, "round 0's reward models: 'shipped', a folder of <aspect>/, or null (new)")
    rewards: dict = _f(dict, "RewardTrainConfig fields for refinement over the backbone's defaults "
                       "(reward_models.config.refine_defaults), e.g. --rewards epochs=2")  # fmt: skip
    # fine-tuning
    reward: str = _f("learned", "what fine-tuning climbs: learned (the round's reward models) or oracle (the shapes "
                     "world's oracle, the ceiling; needs a mode that only ranks samples: dpo, awm, grpo or select)")  # fmt: skip
    finetune_prompts_per_aspect: int = _f(128, "shapes prompts: train-split prompts per aspect (complex included) "
                                          "fine-tuned on (a prompts.finetune file is used whole)")  # fmt: skip
    finetune_recipe: str = _f("reward_ft_shapes", "fine-tuning settings to start from: a recipes/configs/ name or a "
                              "YAML file (its output_dir, seed, cpu, threads, model, rewards, prompts: the loop's)")  # fmt: skip
    finetune: dict = _f(_round_budget, "FeedbackConfig fields over the recipe's, e.g. --finetune learning_rate=1e-5")
    # evaluation
    evaluator: dict = _f(lambda: {"type": "shapes"}, "how each round's test images are scored: type=shapes (the "
                         "oracle), t2i_compbench (BLIP-VQA, a detector, CLIPScore) or rewards, plus its options")  # fmt: skip
    eval_prompts_per_aspect: int = _f(50, "test-split prompts per aspect (complex included), the same every round")
    eval_seeds: tuple[int, ...] = _f((0,), "seeds per evaluation prompt")
    eval_batch_size: int = _f(100, "prompts per sampling call in evaluation")
    grid_prompts: int = _f(6, "test prompts per aspect shown in the per-round grids")

    def __post_init__(self):
        from itercomp.finetune.config import check_reward_kind
        from reward_models.config import RewardTrainConfig, refine_defaults

        if isinstance(self.prompts, dict):  # built in Python rather than by the loader
            self.prompts = loader.config_from_dict(PromptSources, self.prompts, "prompts")
        rewards = check_section("rewards", self.rewards)
        rewards = {**refine_defaults(reward_backbone(rewards, self.reward_init)), **rewards}
        self.rewards = loader.coerce_values(RewardTrainConfig, rewards, "rewards")
        self.finetune = {**_round_budget(), **check_section("finetune", self.finetune)}
        for name, low in MINIMUM.items():
            if getattr(self, name) is not None and getattr(self, name) < low:
                raise ItercompError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        for name, choices in (("annotators", ANNOTATOR_MODES), ("task_aspects", ("own", "all"))):
            if getattr(self, name) not in choices:
                raise ItercompError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")  # fmt: skip
        if not self.eval_seeds:
            raise ItercompError("--eval-seeds needs at least one seed")
        if self.members is not None and self.base_member not in self.members:
            raise ItercompError(
                f"--members {','.join(self.members)} leaves out the fine-tuned member {self.base_member!r}; add it"
            )
        check_reward_kind(self.reward, self.finetune.get("grad_mode", self.recipe().get("grad_mode", "refl")))

    def recipe(self) -> dict:
        """The fine-tuning recipe's settings as written."""
        name = self.finetune_recipe
        path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPES / f"{name}.yaml"
        if not path.is_file():
            raise ItercompError(f"finetune_recipe: no file {path}; name a YAML in {RECIPES} or give a YAML path")
        return loader.read_yaml(path)


def check_section(name: str, values: dict) -> dict:
    """A section's keys other than those the loop sets for each round (a loop-owned key is an error)."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ItercompError(f"{name} must be a mapping of field: value, got {values!r}")
    reserved = [k for k in values if k in RESERVED[name]]
    if reserved:
        raise ItercompError(f"{name}: {reserved[0]!r} is set by the loop for each round; remove it from {name}")
    return values


def section_config(name: str, values: dict, cls, **loop_fields):
    """An instance of the stage's own config class from a section plus the fields the loop sets (merged into
    the stage's own sections key by key)."""
    values = check_section(name, loader.canonical_values(cls, values, name))
    try:
        return cls(**loader.coerce_values(cls, loader.merge_values(values, loop_fields), name))
    except TypeError as e:
        raise ItercompError(f"{name}: {e}") from None


def feedback_config(config: IterateConfig, cls, sampling: dict | None = None, **loop_fields):
    """The fine-tuning config of a round: the recipe's settings (those that are fields of `cls`, less its own
    run's), then the base member's sampling settings, then the `finetune:` section, then the loop's fields."""
    keep = {f.name for f in fields(cls)} - set(RECIPE_RUN_KEYS)
    recipe = {k: v for k, v in loader.apply_aliases(cls, config.recipe()).items() if k in keep}
    # Sections (a mode's settings) merge key by key.
    values = loader.merge_values(loader.merge_values(recipe, sampling or {}), config.finetune)
    return section_config("finetune", values, cls, **loop_fields)


def load_iterate_config(namespace: argparse.Namespace, saved: dict | None = None) -> IterateConfig:
    """Defaults <- the saved run config (on resume) <- `--config FILE` <- flags."""
    return loader.config_from_namespace(IterateConfig, namespace, base=saved)


def changed_fields(config: IterateConfig, saved: dict) -> list[str]:
    """Fields (other than the resumable ones) whose value differs from a run's saved config; a field the saved
    config lacks (added since) counts as unchanged."""
    now, saved = loader.to_dict(config), loader.canonical_values(IterateConfig, saved, "the run's config.yaml")
    return [k for k in now if k in saved and k not in RESUMABLE and now[k] != saved[k]]
