"""The interface the feedback loop uses: the three aspect reward models behind one call.

ensemble = RewardEnsemble.from_pretrained("itercomp/weights/rewards")   # subfolders per aspect
rewards = ensemble(images, prompts)        # {aspect: tensor[B]}, differentiable w.r.t. images

An aspect may hold several reward models ("members", e.g. trained from different seeds or data): their
normalised rewards are combined conservatively, so an image scores high only where the members agree
(`aggregate`: "mean_minus_std" = mean - spread_weight x std across members, "min", or "mean"). Reward feedback
climbs whatever the reward says; a member that is wrong about an image (a blind spot the fine-tuning can find and
exploit) pulls the conservative aggregate down instead of up.

Optionally (`views`) each reward is the mean over exact symmetries of the world (`VIEWS`; the shapes world's:
left-right and top-bottom mirrors with the relation words swapped, palette permutations with the colour words
renamed, itercomp.world.augment.symmetry_views): a verdict is the same in every view, a reward model's error
often is not.

Optionally (`contrast`) each reward is taken relative to the same image scored against the prompt's
contradicting one-attribute variants: r(x, p) - contrast_weight x mean_k r(x, p_k). An image that fits "a red
circle left of a blue square" better than "... right of ...", "... blue circle left of a red square", ... gains;
one that scores every variant alike (it shows neither) does not. A contrast is a function prompt -> variants;
`CONTRASTS` names the built-in ones (the shapes world's one-edit prompts, itercomp.world.augment).

An ensemble folder holds `ensemble.json` ({"members": [subfolders], "aggregate": ..., "spread_weight": ...,
"contrast": null or a CONTRASTS name, "contrast_weight": ..., "contrast_limit": ..., "views": null or a VIEWS
name, "view_count": ...}) and one folder of <aspect>/ subfolders per member; a plain folder of <aspect>/
subfolders is an ensemble of one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from itercomp.errors import ItercompError
from itercomp.io import read_json, write_json
from itercomp.world import REWARD_ASPECTS
from reward_models.config import AGGREGATES
from reward_models.model import RewardModel

ENSEMBLE_FILE = "ensemble.json"
OPTIONS = ("aggregate", "spread_weight", "contrast", "contrast_weight", "contrast_limit", "views", "view_count")


def shapes_one_edit(prompt: str, limit: int | None = None) -> list[str]:
    from itercomp.world.augment import contrastive_prompts

    return contrastive_prompts(prompt, limit=limit)


def shapes_symmetries(images: torch.Tensor, prompts: list[str], count: int) -> list[tuple[torch.Tensor, list[str]]]:
    from itercomp.world.augment import symmetry_views

    return symmetry_views(images, prompts, count)


# name -> (prompt, limit) -> contrasting prompts; a name is what ensemble.json stores.
CONTRASTS: dict[str, Callable[[str, int | None], list[str]]] = {"shapes_one_edit": shapes_one_edit}
# name -> (images, prompts, count) -> [(images, prompts)]: views that a correct reward scores alike.
VIEWS: dict[str, Callable[[torch.Tensor, list[str], int], list]] = {"shapes_symmetries": shapes_symmetries}


def aggregate_rewards(stacked: torch.Tensor, aggregate: str, spread_weight: float = 1.0) -> torch.Tensor:
    """M x B member rewards -> B rewards; one member passes through unchanged."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r} is unknown; use one of {', '.join(AGGREGATES)}")
    if stacked.shape[0] == 1:
        return stacked[0]
    if aggregate == "min":
        return stacked.min(0).values
    mean = stacked.mean(0)
    if aggregate == "mean":
        return mean
    return mean - spread_weight * stacked.std(0)


def read_ensemble(path: str | os.PathLike) -> tuple[list[Path], dict | None]:
    """(member folders, the rest of ensemble.json) of an ensemble folder; a plain folder of <aspect>/ subfolders
    is its own one member, with no spec."""
    path = Path(path)
    if not (path / ENSEMBLE_FILE).is_file():
        return [path], None
    spec = read_json(path / ENSEMBLE_FILE)
    return [path / m for m in spec.pop("members")], spec


class AspectEnsemble(nn.Module):
    """The members of one aspect behind RewardModel's `score` call."""

    def __init__(self, members: Sequence[RewardModel], aggregate: str = "mean_minus_std", spread_weight: float = 1.0):
        super().__init__()
        if not members:
            raise ValueError("an AspectEnsemble needs at least one reward model")
        aggregate_rewards(torch.zeros(1, 1), aggregate)  # validates the name
        if spread_weight < 0:
            raise ValueError(f"spread_weight must be >= 0, got {spread_weight}")
        self.members = nn.ModuleList(members)
        self.aggregate, self.spread_weight = aggregate, spread_weight

    @property
    def config(self):
        return self.members[0].config

    def member_scores(self, images: torch.Tensor, prompts: list[str], normalize: bool = True) -> torch.Tensor:
        """M x B rewards, one row per member."""
        return torch.stack([m.score(images, prompts, normalize=normalize) for m in self.members])

    def score(self, images: torch.Tensor, prompts: list[str], normalize: bool = True) -> torch.Tensor:
        # Members are only comparable on their normalised scales: an aggregate of several always normalises.
        normalize = normalize or len(self.members) > 1
        return aggregate_rewards(self.member_scores(images, prompts, normalize), self.aggregate, self.spread_weight)


class RewardEnsemble(nn.Module):
    def __init__(
        self,
        models: Mapping[str, RewardModel | Sequence[RewardModel]],
        aggregate: str = "mean_minus_std",
        spread_weight: float = 1.0,
        contrast: str | Callable[[str, int | None], list[str]] | None = None,
        contrast_weight: float = 1.0,
        contrast_limit: int | None = 8,
        views: str | None = None,
        view_count: int = 12,
    ):
        super().__init__()
        if not models:
            raise ValueError("a RewardEnsemble needs at least one reward model")
        if isinstance(contrast, str) and contrast not in CONTRASTS:
            raise ValueError(f"contrast={contrast!r} is unknown; use one of {', '.join(CONTRASTS)}, a function or None")
        if contrast_limit is not None and contrast_limit < 1:
            raise ValueError(f"contrast_limit must be >= 1 or None, got {contrast_limit}")
        if views is not None and views not in VIEWS:
            raise ValueError(f"views={views!r} is unknown; use one of {', '.join(VIEWS)} or None")
        if view_count < 1:
            raise ValueError(f"view_count must be >= 1, got {view_count}")
        self.models = nn.ModuleDict(
            {
                aspect: m if isinstance(m, RewardModel) else AspectEnsemble(list(m), aggregate, spread_weight)
                for aspect, m in models.items()
            }
        )
        self.aggregate, self.spread_weight = aggregate, spread_weight
        self.contrast_name = contrast if isinstance(contrast, str) else None
        self.contrast = CONTRASTS[contrast] if isinstance(contrast, str) else contrast
        self.contrast_weight, self.contrast_limit = contrast_weight, contrast_limit
        self.views, self.view_count = views, view_count

    @property
    def aspects(self) -> list[str]:
        return list(self.models)

    @property
    def members(self) -> int:
        """Reward models per aspect."""
        first = next(iter(self.models.values()))
        return len(first.members) if isinstance(first, AspectEnsemble) else 1

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | Sequence[str | os.PathLike], aspects=REWARD_ASPECTS, **kwargs
    ) -> RewardEnsemble:
        """A folder of <aspect>/ subfolders, an ensemble folder (ensemble.json), or a list of folders (members).

        The ensemble's own keyword arguments (`OPTIONS`) override ensemble.json; the others go to
        RewardModel.from_pretrained."""
        own = {k: kwargs.pop(k) for k in OPTIONS if k in kwargs}
        if isinstance(path, (str, os.PathLike)):
            folders, spec = read_ensemble(path)
            own = {**{k: v for k, v in (spec or {}).items() if k in OPTIONS}, **own}
        else:
            folders = [Path(p) for p in path]
            if not folders:
                raise ItercompError("RewardEnsemble.from_pretrained got an empty list of folders")
        for folder in folders:
            missing = [a for a in aspects if not (folder / a / "config.json").is_file()]
            if missing:
                raise ItercompError(
                    f"{folder} has no reward model for {', '.join(missing)}; expected {folder}/<aspect>/config.json "
                    "(train them with 'itercomp rewards train')"
                )
        members = {a: [RewardModel.from_pretrained(f / a, **kwargs) for f in folders] for a in aspects}
        return cls({a: m[0] if len(m) == 1 else m for a, m in members.items()}, **own)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """One plain member: <path>/<aspect>/; otherwise <path>/member_<k>/<aspect>/ and <path>/ensemble.json."""
        path = Path(path)
        if self.contrast is not None and self.contrast_name is None:
            raise ValueError("a contrast function without a name cannot be saved; use one of CONTRASTS or None")
        if self.members == 1 and self.contrast is None and self.views is None:
            for aspect, model in self.models.items():
                model.save_pretrained(path / aspect)
            return
        names = [f"member_{k}" for k in range(self.members)]
        for aspect, model in self.models.items():
            for name, member in zip(names, model.members if isinstance(model, AspectEnsemble) else [model]):
                member.save_pretrained(path / name / aspect)
        write_json(
            path / ENSEMBLE_FILE,
            {"members": names, "aggregate": self.aggregate, "spread_weight": self.spread_weight,
             "contrast": self.contrast_name, "contrast_weight": self.contrast_weight,
             "contrast_limit": self.contrast_limit, "views": self.views, "view_count": self.view_count},
        )  # fmt: skip

    def forward(self, images: torch.Tensor, prompts: list[str], normalize: bool = True) -> dict[str, torch.Tensor]:
        """images B x 3 x H x W in [0, 1] (any size), one prompt per image -> {aspect: rewards[B]}."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts; pass one prompt per image")
        if self.views is None:
            return self._score(images, prompts, normalize)
        # The mean over symmetric views: an exact symmetry of the world changes no verdict, so a reward's
        # disagreement between views is error, and averaging it out is a free ensemble.
        outs = [self._score(x, p, normalize) for x, p in VIEWS[self.views](images, prompts, self.view_count)]
        return {aspect: torch.stack([o[aspect] for o in outs]).mean(0) for aspect in self.models}

    def _score(self, images: torch.Tensor, prompts: list[str], normalize: bool) -> dict[str, torch.Tensor]:
        if self.contrast is None:
            return {aspect: model.score(images, prompts, normalize=normalize) for aspect, model in self.models.items()}
        # Score each image against its prompt and its contrasting prompts in one batch per aspect.
        variants = [self.contrast(p, self.contrast_limit) for p in prompts]
        index = torch.tensor([i for i, v in enumerate(variants) for _ in v], dtype=torch.long, device=images.device)
        flat = [q for v in variants for q in v]
        counts = torch.tensor([len(v) for v in variants], dtype=images.dtype, device=images.device)
        out = {}
        for aspect, model in self.models.items():
            own = model.score(images, prompts, normalize=normalize)
            if not flat:
                out[aspect] = own
                continue
            other = model.score(images[index], flat, normalize=normalize)
            mean_other = torch.zeros_like(own).index_add(0, index.to(own.device), other) / counts.clamp(min=1)
            # Prompts without variants keep their own reward (nothing to contrast with).
            out[aspect] = own - self.contrast_weight * torch.where(counts > 0, mean_other, torch.zeros_like(own))
        return out

    def score(self, images: torch.Tensor, prompts: list[str], normalize: bool = True) -> torch.Tensor:
        return self(images, prompts, normalize=normalize)
