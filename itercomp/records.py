"""Core record types shared by the gallery, the annotation store, the reward models and the loop.

A gallery run writes `manifest.jsonl`, one `ImageRecord` per line, paths relative to the manifest's folder.
A ranking (docs/design.md §4) orders the candidate images of one prompt for one aspect, best first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from itertools import combinations

from itercomp.errors import ItercompError

MANIFEST = "manifest.jsonl"
SIMULATED = "simulated"
REWARD_MODEL_PREFIX = "reward_model:"


def image_id(prompt_id: str, generator: str, seed: int) -> str:
    return f"{prompt_id}-{generator}-s{seed}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Record:
    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is f.default_factory is None]
        if missing:
            raise ItercompError(f"{cls.__name__} is missing {', '.join(missing)}: got keys {sorted(data)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageRecord(_Record):
    """One generated image: which generator drew which prompt with which seed, and where it lies."""

    image_id: str
    prompt_id: str
    prompt: str
    aspect: str
    generator: str
    seed: int
    path: str  # relative to the manifest's folder
    sha256: str


@dataclass
class Candidate(_Record):
    """An image as a ranking refers to it (a copy of the manifest fields that identify it)."""

    image_id: str
    generator: str
    seed: int
    path: str
    sha256: str

    @classmethod
    def of(cls, image: ImageRecord) -> Candidate:
        return cls(image.image_id, image.generator, image.seed, image.path, image.sha256)


@dataclass
class Ranking(_Record):
    """One ranking: the candidates of one prompt, ordered best to worst for one aspect."""

    prompt_id: str
    prompt: str
    aspect: str
    candidates: list[Candidate]
    order: list[str]  # candidate image ids, best first
    annotator: str  # an annotator id, "simulated", or "reward_model:<id>"
    round: int = 0
    created_at: str = field(default_factory=now)
    shown_order: list[str] | None = None  # the order the annotator saw the images in
    seconds_spent: float | None = None
    # One rank per entry of `order` when the source allows ties (ImageReward); equal ranks give no pair.
    ranks: list[int] | None = None

    def __post_init__(self):
        self.candidates = [c if isinstance(c, Candidate) else Candidate.from_dict(c) for c in self.candidates]
        ids = [c.image_id for c in self.candidates]
        if sorted(self.order) != sorted(ids) or len(set(self.order)) != len(self.order):
            raise ItercompError(
                f"ranking of {self.prompt_id}/{self.aspect} must order every candidate exactly once: "
                f"candidates {ids}, order {self.order}"
            )
        if self.ranks is not None and (
            len(self.ranks) != len(self.order) or any(a > b for a, b in zip(self.ranks, self.ranks[1:]))
        ):
            raise ItercompError(
                f"ranking of {self.prompt_id}/{self.aspect}: `ranks` must give one non-decreasing rank per entry of "
                f"`order` (equal ranks are ties), got {self.ranks}"
            )

    def pairs(self) -> list[tuple[str, str]]:
        """Every (better, worse) pair of candidate ids: C(n, 2) for a strict order; tied candidates give none."""
        if self.ranks is None:
            return list(combinations(self.order, 2))
        ranked = list(zip(self.order, self.ranks))
        return [(a, b) for (a, ra), (b, rb) in combinations(ranked, 2) if ra < rb]
