"""Simulated annotators for the shapes world: the oracle's soft score plus human-like noise.

Each simulated annotator ranks a task by sampling from a Plackett-Luce model whose utilities are the oracle's
soft scores divided by a temperature: at temperature 0 the ranking is the oracle's own, and the higher the
temperature, the more often close candidates are swapped (clearly different ones rarely are), which is how
human rankers err (`itercomp.rankings.plackett_luce`).

Rankings go through the same store calls as the web app (`next_task`, then `submit` under the issued key), so
assignment, overlap and idempotency are the same; annotators are named `sim-1`, `sim-2`, ... with kind
"simulated".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm import tqdm

from annotation_app.store import Store
from annotation_app.tasks import TaskSpec
from itercomp.errors import ItercompError
from itercomp.rankings import plackett_luce


@dataclass
class SimulationConfig:
    annotators: int = field(default=5, metadata={"help": "number of simulated annotators (sim-1 ... sim-N)"})
    temperature: float = field(
        default=0.05, metadata={"help": "Plackett-Luce temperature on the oracle's [0, 1] soft score; 0 = no noise"}
    )
    overlap: int = field(default=2, metadata={"help": "rankings per task (k); capped at the number of annotators"})
    seed: int = 0
    round: int = 0
    prefix: str = field(default="sim", metadata={"help": "annotator names are <prefix>-1 ... <prefix>-N"})

    def __post_init__(self):
        if self.annotators < 1:
            raise ItercompError(f"--annotators must be >= 1, got {self.annotators}")
        if self.temperature < 0:
            raise ItercompError(f"--temperature must be >= 0, got {self.temperature}")
        if self.overlap < 1:
            raise ItercompError(f"--overlap must be >= 1, got {self.overlap}")

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(1, self.annotators + 1)]


def oracle_score(image: np.ndarray, prompt: str, aspect: str) -> float:
    from itercomp.world import score

    return score(image, prompt).score


class _Scores:
    """Oracle scores per image, computed once and shared by all simulated annotators."""

    def __init__(self, score_fn: Callable[[np.ndarray, str, str], float]):
        self.score_fn = score_fn
        self.cache: dict[tuple[str, str, str], float] = {}

    def __call__(self, task: TaskSpec) -> list[float]:
        out = []
        for c in task.candidates:
            key = (c.image_id, task.prompt, task.aspect)
            if key not in self.cache:
                path = task.image_path(c.image_id)
                if not path.is_file():
                    raise ItercompError(f"image {path} of task {task.prompt_id} is missing; re-run the gallery")
                image = np.asarray(Image.open(path).convert("RGB"))
                try:
                    self.cache[key] = float(self.score_fn(image, task.prompt, task.aspect))
                except ItercompError as e:
                    raise ItercompError(
                        f"cannot score prompt {task.prompt!r} ({e}); simulated annotators rank shapes-world prompts"
                    ) from None
            out.append(self.cache[key])
        return out


def simulate(store: Store, config: SimulationConfig, score_fn=oracle_score, progress: bool = True) -> dict:
    """Let the simulated annotators rank until every task of the round has `overlap` rankings (or they ran out)."""
    names = config.names
    for name in names:
        store.ensure_annotator(name, "simulated")
    overlap = min(config.overlap, config.annotators)
    rngs = {name: np.random.default_rng([config.seed, i]) for i, name in enumerate(names)}
    scores = _Scores(score_fn)
    before = store.progress(None, overlap=overlap, round=config.round)
    if before["tasks"] == 0:
        raise ItercompError(f"no tasks in round {config.round}: load a gallery with --gallery-run DIR")
    submitted = {name: 0 for name in names}
    bar = tqdm(
        total=before["target"] - before["towards_target"], desc="simulated rankings", unit="ranking",
        disable=not progress,
    )  # fmt: skip
    active = list(names)
    while active:
        # Round-robin, one task each, so that with overlap < annotators the work spreads over everyone.
        for name in list(active):
            assignment = store.next_task(name, overlap=overlap, round=config.round, lease_seconds=0)
            if assignment is None:
                active.remove(name)
                continue
            task = assignment.task
            order_idx = plackett_luce(scores(task), config.temperature, rngs[name])
            order = [task.candidates[i].image_id for i in order_idx]
            store.submit(name, assignment.key, order, prompt_id=task.prompt_id, aspect=task.aspect)
            submitted[name] += 1
            bar.update(1)
    bar.close()
    after = store.progress(None, overlap=overlap, round=config.round)
    return {"submitted": submitted, "total": sum(submitted.values()), "progress": after}
