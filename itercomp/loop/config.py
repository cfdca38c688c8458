"""`IterateConfig`: every setting of `itercomp iterate`, from a YAML file plus `--field value` overrides.

Top-level fields are flags (`--prompts_per_aspect 32`), parsed with itercomp.config's helpers (the loader every
stage uses). Two nested sections pass settings through to the stages' own configs: `rewards:` (fields of
`reward_models.config.RewardTrainConfig`, used to refine the reward models each round) and `finetune:` (fields of
`itercomp.finetune.FeedbackConfig`). In YAML they are mappings; on the command line `--rewards epochs=2` and
`--finetune max_steps=40 learning_rate=1e-5`. The loop itself sets the fields that tie a stage into the run layout
(data files, output folders, which models to start from), so a section may not set those.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from itercomp.config import _base, _coerce, _converter
from itercomp.errors import ItercompError
from itercomp.finetune.config import check_reward_kind
from reward_models.config import RewardTrainConfig

ANNOTATOR_MODES = ("simulated", "human")
SECTIONS = ("rewards", "finetune")
# Set by the loop per round and stage; a section that sets them would break the run layout.
RESERVED = {
    "rewards": ("rankings", "output_dir", "aspects", "init_from"),
    "finetune": ("output_dir",),
}
# Settings that may differ when a run is resumed: how far to go and how to wait, not what is computed.
RESUMABLE = ("rounds", "human_wait_minutes", "human_serve", "serve_host", "serve_port", "threads")
SHIPPED = "shipped"  # `reward_init` / `base model` value meaning the weights shipped in the package
MAX_CANDIDATES = 26  # the annotation app labels candidates A..Z


def shipped_rewards() -> Path:
    return Path(__file__).resolve().parents[1] / "weights" / "rewards"


def _reward_defaults() -> dict:
    # Refining shipped models on a few hundred rankings: a fifth of the from-scratch learning rate and a few
    # epochs keep them close to where they start (they already agree with the oracle on ~90% of pairs).
    return {"epochs": 4, "learning_rate": 2e-4, "batch_rankings": 16}


def _finetune_defaults() -> dict:
    # The shapes world's ~2M-parameter base model, as recipes/configs/reward_ft_shapes.yaml (10x IterComp's
    # learning rate for a small model trained from scratch, a short EMA) with half its steps and batch per round,
    # so three rounds fit the demo's CPU budget. Sampling steps and guidance come from the base member's `call`.
    # The pretraining-loss regulariser is on: without it, 100 steps at this rate turned the (weak) base model
    # into textured grids that the reward models scored higher and the oracle scored 0 (reward hacking), while
    # with weight 0.1 on ground-truth renders the images stayed close to the base model's (measured, docs/iterate.md).
    return {"learning_rate": 1e-4, "max_steps": 100, "batch_size": 8, "ema_decay": 0.99, "eval_prompts": 16,
            "checkpoint_every": 25, "pretrain_loss_weight": 0.1, "regulariser_data": "shapes",
            "regulariser_samples": 512}  # fmt: skip


@dataclass
class IterateConfig:
    """The iterative loop: gallery -> rankings -> reward models -> fine-tuning -> evaluation -> expansion."""

    rounds: int = field(default=3, metadata={"help": "rounds of the loop (round 0 is the base model's evaluation)"})
    out: str = field(default="runs/iterate", metadata={"help": "run folder (round_<k>/, report.json, pictures)"})
    seed: int = field(default=0, metadata={"help": "seed of prompts, gallery seeds, annotators and training"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)"})
    # gallery
    gallery: str = field(default="shapes", metadata={"help": "gallery YAML file or shipped gallery name"})
    members: tuple[str, ...] | None = field(
        default=None, metadata={"help": "gallery members to use (default: all); must include base_member"}
    )
    base_member: str = field(
        default="base", metadata={"help": "the gallery member that is fine-tuned (a `type: diffusers` member)"}
    )
    skip_unavailable: bool = field(
        default=False, metadata={"help": "leave out gallery members whose weights are not here instead of failing"}
    )
    prompts_per_aspect: int = field(
        default=24, metadata={"help": "new train-split prompts per aspect ranked each round"}
    )
    val_prompts_per_aspect: int = field(
        default=6, metadata={"help": "new val-split prompts per aspect ranked each round (reward-model validation)"}
    )
    images_per_prompt: int = field(default=1, metadata={"help": "images per prompt and gallery member (seeds)"})
    current_model_seeds: int = field(
        default=4,
        metadata={
            "help": "seeds per prompt of the current model (the base, then the latest fine-tuned one) in each round's "
            "rankings: same-model pairs, the comparisons reward feedback makes (at least images_per_prompt)"
        },
    )
    # rankings
    annotators: str = field(
        default="simulated",
        metadata={"help": "simulated (oracle + Plackett-Luce noise) or human (the annotation app)"},
    )
    task_aspects: str = field(
        default="own", metadata={"help": "own: rank a prompt for its own aspect (IterComp); all: for all three"}
    )
    overlap: int = field(default=1, metadata={"help": "rankings per task (annotators per prompt and aspect)"})
    simulated_annotators: int = field(default=3, metadata={"help": "number of simulated annotators"})
    temperature: float = field(default=0.05, metadata={"help": "simulated annotators' noise (0 = the oracle's order)"})
    target_rankings: int | None = field(
        default=None, metadata={"help": "human mode: rankings needed to go on (default: every task x overlap)"}
    )
    annotation_db: str | None = field(
        default=None,
        metadata={"help": "SQLAlchemy URL shared by all rounds (default: a SQLite file in each round's rankings/)"},
    )
    human_wait_minutes: float = field(
        default=0.0, metadata={"help": "human mode: wait this long for rankings (0: exit at once, resume later)"}
    )
    human_serve: bool = field(
        default=True, metadata={"help": "human mode: serve the ranking app from this process while waiting"}
    )
    serve_host: str = field(default="127.0.0.1", metadata={"help": "human mode: address of the ranking app"})
    serve_port: int = field(default=7860, metadata={"help": "human mode: port of the ranking app"})
    # reward models
    reward_init: str | None = field(
        default=SHIPPED,
        metadata={"help": "reward models of round 0: 'shipped', a folder with <aspect>/ subfolders, or null (new)"},
    )
    rewards: dict = field(
        default_factory=_reward_defaults,
        metadata={"help": "RewardTrainConfig fields for refinement, e.g. --rewards epochs=2 learning_rate=1e-4"},
    )
    # fine-tuning
    reward: str = field(
        default="learned",
        metadata={
            "help": "what fine-tuning climbs: learned (the round's reward models) or oracle (the shapes world's "
            "oracle, a perfect annotator: the ceiling; needs --finetune grad_mode=grpo, dpo or select)"
        },
    )
    finetune_prompts_per_aspect: int = field(
        default=128, metadata={"help": "train-split prompts per aspect (complex included) fine-tuned on"}
    )
    finetune: dict = field(
        default_factory=_finetune_defaults,
        metadata={
            "help": "FeedbackConfig fields, e.g. --finetune max_steps=40 learning_rate=1e-5 (sampling steps and "
            "guidance default to the base member's `call`)"
        },
    )
    # evaluation
    eval_prompts_per_aspect: int = field(
        default=50, metadata={"help": "test-split prompts per aspect (complex included), the same every round"}
    )
    eval_seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "seeds per evaluation prompt"})
    eval_batch_size: int = field(default=100, metadata={"help": "prompts per sampling call in evaluation"})
    grid_prompts: int = field(default=6, metadata={"help": "test prompts per aspect shown in the per-round grids"})

    def __post_init__(self):
        for name in SECTIONS:
            value = getattr(self, name)
            if value is None:
                setattr(self, name, {})
            elif not isinstance(value, dict):
                raise ItercompError(f"{name} must be a mapping of field: value, got {value!r}")
        self.rewards = {**_reward_defaults(), **self.rewards}
        self.finetune = {**_finetune_defaults(), **self.finetune}
        if self.rounds < 0:
            raise ItercompError(f"--rounds must be >= 0, got {self.rounds}")
        positive = (
            "prompts_per_aspect", "val_prompts_per_aspect", "images_per_prompt", "current_model_seeds", "overlap",
            "simulated_annotators", "finetune_prompts_per_aspect", "eval_prompts_per_aspect", "eval_batch_size",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ItercompError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.grid_prompts < 0:
            raise ItercompError(f"--grid_prompts must be >= 0, got {self.grid_prompts}")
        if self.annotators not in ANNOTATOR_MODES:
            raise ItercompError(f"--annotators must be one of {', '.join(ANNOTATOR_MODES)}, got {self.annotators!r}")
        if self.task_aspects not in ("own", "all"):
            raise ItercompError(f"--task_aspects must be 'own' or 'all', got {self.task_aspects!r}")
        if self.temperature < 0 or self.human_wait_minutes < 0:
            raise ItercompError("--temperature and --human_wait_minutes must be >= 0")
        if self.target_rankings is not None and self.target_rankings < 1:
            raise ItercompError(f"--target_rankings must be >= 1, got {self.target_rankings}")
        if not self.eval_seeds:
            raise ItercompError("--eval_seeds needs at least one seed")
        if self.members is not None and self.base_member not in self.members:
            raise ItercompError(
                f"--members {','.join(self.members)} leaves out the fine-tuned member {self.base_member!r}; add it"
            )
        self.check_rewards_section()
        check_reward_kind(self.reward, self.finetune.get("grad_mode", "refl"))

    def check_rewards_section(self) -> None:
        check_section("rewards", self.rewards, RewardTrainConfig)
        self.rewards = coerce_section(RewardTrainConfig, self.rewards)

    @property
    def run_dir(self) -> Path:
        return Path(self.out)


def check_section(name: str, values: dict, cls) -> None:
    """Unknown or loop-owned keys in a section are errors that name the valid keys."""
    known = {f.name for f in dataclasses.fields(cls)}
    reserved = [k for k in values if k in RESERVED[name]]
    if reserved:
        raise ItercompError(
            f"{name}: {reserved[0]!r} is set by the loop for each round; remove it from the {name} section"
        )
    unknown = sorted(set(values) - known)
    if unknown:
        valid = sorted(known - set(RESERVED[name]))
        raise ItercompError(f"{name}: unknown field {unknown[0]!r}; {cls.__name__} fields are {', '.join(valid)}")


def coerce_section(cls, values: dict) -> dict:
    """Text values (from flags) to the field's type; values that YAML already typed are kept as they are, so a
    mapping field such as FeedbackConfig.reward_weights reaches its own parser untouched."""
    import typing

    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in values.items():
        scalar, sequence, optional = _base(hints[name])
        try:
            if isinstance(value, str) and optional and value.lower() in ("none", "null", "~"):
                value = None
            elif isinstance(value, str) and sequence:
                value = tuple(_converter(scalar)(v) for v in value.split(",") if v.strip())
            elif isinstance(value, str) and scalar in (int, float, bool):
                value = _converter(scalar)(value)
            elif isinstance(value, int) and not isinstance(value, bool) and scalar is float:
                value = float(value)
        except (ValueError, argparse.ArgumentTypeError):
            raise ItercompError(f"{cls.__name__}.{name} must be {scalar.__name__}, got {value!r}") from None
        out[name] = value
    return out


def section_config(name: str, values: dict, cls, **loop_fields):
    """An instance of the stage's own config class from a section plus the fields the loop sets."""
    check_section(name, values, cls)
    try:
        return cls(**{**coerce_section(cls, values), **loop_fields})
    except TypeError as e:
        raise ItercompError(f"{name}: {e}") from None


# ---- YAML + command line --------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE`, one `--field value` per top-level field, and `--rewards/--finetune key=value ...`."""
    import typing

    parser.add_argument("--config", type=Path, help="YAML file of field: value pairs (flags override it)")
    hints = typing.get_type_hints(IterateConfig)
    for f in dataclasses.fields(IterateConfig):
        if f.name in SECTIONS:
            parser.add_argument(
                f"--{f.name}", nargs="+", action="extend", metavar="FIELD=VALUE", default=argparse.SUPPRESS,
                help=f.metadata["help"],
            )  # fmt: skip
            continue
        scalar, sequence, _ = _base(hints[f.name])
        kwargs = {"type": _converter(scalar), "default": argparse.SUPPRESS, "help": f.metadata.get("help", "")}
        if sequence:
            kwargs["nargs"] = "+"
        parser.add_argument(f"--{f.name}", **kwargs)


def parse_assignments(name: str, items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ItercompError(f"--{name} takes FIELD=VALUE pairs (e.g. --{name} epochs=2), got {item!r}")
        out[key] = yaml.safe_load(value) if value else None
    return out


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ItercompError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ItercompError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ItercompError(f"{path} must be a mapping of field: value")
    known = {f.name for f in dataclasses.fields(IterateConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ItercompError(f"{path}: unknown keys {unknown}; valid keys are {sorted(known)}")
    return values


def merge(base: dict, overrides: dict) -> dict:
    """Overrides win field by field; sections merge key by key (a flag changes one setting, not the section)."""
    out = dict(base)
    for key, value in overrides.items():
        if key in SECTIONS and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def config_from_values(values: dict) -> IterateConfig:
    plain = {k: v for k, v in values.items() if k not in SECTIONS}
    try:
        return IterateConfig(**_coerce(IterateConfig, plain), **{k: values[k] for k in SECTIONS if k in values})
    except TypeError as e:
        raise ItercompError(f"bad config: {e}") from None


def namespace_values(namespace: argparse.Namespace) -> dict:
    """The fields given on the command line (flags not given are absent)."""
    values = {}
    for f in dataclasses.fields(IterateConfig):
        if hasattr(namespace, f.name):
            value = getattr(namespace, f.name)
            values[f.name] = parse_assignments(f.name, value) if f.name in SECTIONS else value
    return values


def load_config(namespace: argparse.Namespace, saved: dict | None = None) -> IterateConfig:
    """Defaults <- the saved run config (on resume) <- `--config FILE` <- flags."""
    values = dict(saved or {})
    if getattr(namespace, "config", None) is not None:
        values = merge(values, read_yaml(namespace.config))
    return config_from_values(merge(values, namespace_values(namespace)))


def to_dict(config: IterateConfig) -> dict:
    """Plain YAML/JSON data (tuples become lists, sections included)."""
    return _plain(dataclasses.asdict(config))


def changed_fields(config: IterateConfig, saved: dict) -> list[str]:
    """Fields (other than the resumable ones) whose value differs from a run's saved config."""
    now = to_dict(config)
    return [k for k in now if k not in RESUMABLE and _plain(now[k]) != _plain(saved.get(k))]


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
