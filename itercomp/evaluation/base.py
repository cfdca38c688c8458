"""The evaluator interface: one call that scores images against their prompts, per aspect.

    rows = evaluator.score(images, prompts, aspects)   # images: H x W x 3 uint8 arrays
    rows[i]["score"], rows[i]["correct"]                # float; bool, or None without a binary verdict

Every row also holds the evaluator's own details (JSON-safe: the oracle's predicates, BLIP-VQA's phrases and
P(yes), detections, ...). `summarize_rows` turns rows that carry `aspect` into the per-aspect table every
consumer shows. An evaluator is a class with a config dataclass (`config_class`, fields with help), registered
by name in `itercomp.evaluation.registry`.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from itercomp.errors import ItercompError
from itercomp.world.vocab import ASPECTS


@dataclass
class EvaluatorConfig:
    """Settings every evaluator has."""

    batch_size: int = field(default=16, metadata={"help": "images per score call (one step of the progress bar)"})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ItercompError(f"batch_size={self.batch_size} must be >= 1; pass batch_size=16 or another count")


class Evaluator(ABC):
    """Scores images against prompts. Subclasses set `config_class` and implement `score`."""

    name: ClassVar[str] = ""  # set by register_evaluator
    config_class: ClassVar[type[EvaluatorConfig]] = EvaluatorConfig

    def __init__(self, config: EvaluatorConfig | None = None):
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    def spec(self) -> dict:
        """The resolved settings as `build_evaluator` takes them back: {"type": name, **config}."""
        return {"type": self.name, **dataclasses.asdict(self.config)}

    @abstractmethod
    def score(self, images: Sequence, prompts: Sequence[str], aspects: Sequence[str]) -> list[dict]:
        """One row per image: `score` (float), `correct` (bool or None) and the evaluator's details."""


def check_inputs(images: Sequence, prompts: Sequence[str], aspects: Sequence[str]) -> None:
    """One prompt and one known aspect per image (an evaluator calls this first)."""
    if not (len(images) == len(prompts) == len(aspects)):
        raise ValueError(
            f"got {len(images)} images, {len(prompts)} prompts and {len(aspects)} aspects; pass one of each per image"
        )
    unknown = sorted({a for a in aspects if a not in ASPECTS})
    if unknown:
        raise ItercompError(f"unknown aspect(s) {unknown}; aspects are {', '.join(ASPECTS)}")


def summarize_rows(rows: Sequence[dict]) -> dict:
    """{aspect: {"n", "mean_score", "stderr", "accuracy"}} over rows that carry `aspect`, `score` and `correct`.

    `stderr` is the standard error of the mean score (sample standard deviation / sqrt(n); None for one row);
    `accuracy` the share of correct rows among those with a verdict (None when no row has one). Aspects come in
    the order of ASPECTS, others after them by name."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["aspect"]].append(row)
    order = [a for a in ASPECTS if a in groups] + sorted(a for a in groups if a not in ASPECTS)
    summary = {}
    for aspect in order:
        scores = [float(r["score"]) for r in groups[aspect]]
        n = len(scores)
        mean = sum(scores) / n
        stderr = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1) / n) if n > 1 else None
        verdicts = [bool(r["correct"]) for r in groups[aspect] if r.get("correct") is not None]
        summary[aspect] = {
            "n": n,
            "mean_score": mean,
            "stderr": stderr,
            "accuracy": sum(verdicts) / len(verdicts) if verdicts else None,
        }
    return summary


def format_summary(summary: dict) -> str:
    """The per-aspect table: images, mean score ± standard error, accuracy where the evaluator gives verdicts."""
    lines = [f"{'aspect':<26} {'images':>6} {'mean score ± stderr':>20} {'accuracy':>9}"]
    for aspect, s in summary.items():
        spread = f"± {s['stderr']:.3f}" if s["stderr"] is not None else "±     -"
        accuracy = f"{s['accuracy']:>9.1%}" if s["accuracy"] is not None else f"{'-':>9}"
        lines.append(f"{aspect:<26} {s['n']:>6} {s['mean_score']:>12.3f} {spread} {accuracy}")
    return "\n".join(lines)
