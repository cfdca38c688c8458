"""Held-out evaluation: pairwise accuracy against the rankings and, in the shapes world, against the oracle.

Same-model metrics (what reward feedback needs): among the candidates of one ranking drawn by one generator with
different seeds, how often the reward orders two seeds like the oracle -- on pairs whose oracle verdicts differ
(one image correct, the other not) and on pairs whose soft scores differ -- and best-of-N: the oracle accuracy of
the reward's pick of N seeds against a random seed (the mean over the N) and the oracle's own pick (any of the N
correct). `gain_share` = (pick - random) / (oracle pick - random): the share of the oracle's gain the reward gets.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from itercomp.errors import PromptError
from itercomp.rankings import ranking_pairs
from itercomp.records import Ranking
from reward_models.data import RankingDataset, collate

Scorer = Callable[[torch.Tensor, list[str]], torch.Tensor]


def _scorer(model) -> Scorer:
    """A RewardModel scores raw (its own scale); anything else with `score` (an ensemble) normalised."""
    from reward_models.model import RewardModel

    if isinstance(model, RewardModel):
        return lambda images, prompts: model.score(images, prompts, normalize=False)
    if hasattr(model, "score"):
        return lambda images, prompts: model.score(images, prompts)
    return model


@torch.no_grad()
def candidate_rewards(model, rankings: list[Ranking], root, batch_rankings: int = 32, image_size: int | None = None):
    """Rewards of every candidate, one array per ranking (in candidate order). `model`: a RewardModel (raw
    rewards), an object with `score(images, prompts)` or a function (images, prompts) -> rewards."""
    if hasattr(model, "eval"):
        model.eval()
    size = image_size or model.config.image_size
    score = _scorer(model)
    dataset = RankingDataset(rankings, root, size)
    out: list[np.ndarray] = []
    for batch in DataLoader(dataset, batch_size=batch_rankings, collate_fn=collate):
        rewards = score(batch["images"], batch["prompts"]).float().cpu().numpy()
        start = 0
        for index in batch["index"].tolist():
            n = len(rankings[index].candidates)
            out.append(rewards[start : start + n])
            start += n
    return out


def oracle_verdicts(ranking: Ranking, root) -> tuple[np.ndarray, np.ndarray] | None:
    """(soft scores, correct as 0/1) of every candidate by the shapes oracle (noise-free), or None for a prompt
    outside the world."""
    from itercomp.world import score
    from reward_models.data import load_image

    try:
        verdicts = [score(load_image(root / c.path), ranking.prompt) for c in ranking.candidates]
    except PromptError:
        return None
    return np.array([v.score for v in verdicts]), np.array([float(v.correct) for v in verdicts])


def oracle_scores(ranking: Ranking, root) -> np.ndarray | None:
    """The shapes oracle's noise-free soft score of each candidate, or None for a prompt outside the world."""
    verdicts = oracle_verdicts(ranking, root)
    return None if verdicts is None else verdicts[0]


def same_model_groups(ranking: Ranking) -> list[list[int]]:
    """Candidate positions per generator with >= 2 distinct seeds, each list ordered by seed."""
    by_generator: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(ranking.candidates):
        by_generator[c.generator].append(i)
    groups = []
    for positions in by_generator.values():
        positions = sorted(positions, key=lambda i: ranking.candidates[i].seed)
        if len({ranking.candidates[i].seed for i in positions}) >= 2:
            groups.append(positions)
    return groups


def _agree(reward_hi: float, reward_lo: float) -> float:
    return float(reward_hi > reward_lo) + 0.5 * float(reward_hi == reward_lo)


class SameModelTally:
    """Accumulates same-model pair accuracy and best-of-N picks over groups of seeds."""

    def __init__(self, best_of: int = 4):
        if best_of < 2:
            raise ValueError(f"best_of must be >= 2 (a pick needs two seeds), got {best_of}")
        self.best_of = best_of
        self.verdict = [0.0, 0]  # agreeing, pairs (one correct, one not)
        self.soft = [0.0, 0]  # agreeing, pairs (soft scores differ)
        self.picks: list[tuple[float, float, float]] = []  # (reward pick, random seed, oracle pick) correct

    def add(self, rewards: np.ndarray, scores: np.ndarray, correct: np.ndarray) -> None:
        """One group: the rewards, oracle soft scores and verdicts of one generator's seeds of one prompt."""
        n = len(rewards)
        for i in range(n):
            for j in range(i + 1, n):
                if correct[i] != correct[j]:
                    hi, lo = (i, j) if correct[i] > correct[j] else (j, i)
                    self.verdict[0] += _agree(rewards[hi], rewards[lo])
                    self.verdict[1] += 1
                if scores[i] != scores[j]:
                    hi, lo = (i, j) if scores[i] > scores[j] else (j, i)
                    self.soft[0] += _agree(rewards[hi], rewards[lo])
                    self.soft[1] += 1
        if n >= self.best_of:
            r, c = rewards[: self.best_of], correct[: self.best_of]
            self.picks.append((float(c[int(np.argmax(r))]), float(c.mean()), float(c.max())))

    def result(self) -> dict:
        out = {
            "verdict_pairs": self.verdict[1],
            "verdict_pair_accuracy": self.verdict[0] / self.verdict[1] if self.verdict[1] else None,
            "soft_pairs": self.soft[1],
            "soft_pair_accuracy": self.soft[0] / self.soft[1] if self.soft[1] else None,
            "best_of": self.best_of,
            "pick_groups": len(self.picks),
        }
        if self.picks:
            pick, random, best = np.array(self.picks).mean(0).tolist()
            out.update(pick_accuracy=pick, random_accuracy=random, oracle_pick_accuracy=best,
                       gain_share=(pick - random) / (best - random) if best > random else None)  # fmt: skip
        return out


def evaluate_rankings(model, rankings: list[Ranking], root, oracle: bool = True, best_of: int = 4) -> dict:
    """Pairwise accuracy on the rankings' own pairs and (where the oracle applies) on the oracle's pairs, plus
    same-model metrics (`same_model`) when rankings hold several seeds of one generator."""
    rewards = candidate_rewards(model, rankings, root)
    correct = total = oracle_correct = oracle_total = 0
    tally, groups = SameModelTally(best_of), 0
    for ranking, r in zip(rankings, rewards):
        for b, w in ranking_pairs(ranking):
            correct += _agree(r[b], r[w])
            total += 1
        if oracle:
            verdicts = oracle_verdicts(ranking, root)
            if verdicts is None:
                continue
            s, ok = verdicts
            for i in range(len(s)):
                for j in range(i + 1, len(s)):
                    if s[i] == s[j]:  # the oracle ties them: no pair
                        continue
                    hi, lo = (i, j) if s[i] > s[j] else (j, i)
                    oracle_correct += _agree(r[hi], r[lo])
                    oracle_total += 1
            for group in same_model_groups(ranking):
                tally.add(r[group], s[group], ok[group])
                groups += 1
    result = {"rankings": len(rankings), "pairs": total, "pair_accuracy": correct / total if total else None}
    if oracle:
        result.update(
            oracle_pairs=oracle_total, oracle_agreement=oracle_correct / oracle_total if oracle_total else None
        )
        if groups:
            result["same_model"] = {"groups": groups, **tally.result()}
    return result
