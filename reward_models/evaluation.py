"""Held-out evaluation: pairwise accuracy against the rankings and, in the shapes world, against the oracle."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from itercomp.errors import PromptError
from itercomp.records import Ranking
from reward_models.data import RankingDataset, collate, ranking_pairs
from reward_models.model import RewardModel


@torch.no_grad()
def candidate_rewards(model: RewardModel, rankings: list[Ranking], root, batch_rankings: int = 32) -> list[np.ndarray]:
    """Raw rewards of every candidate, one array per ranking (in candidate order)."""
    model.eval()
    dataset = RankingDataset(rankings, root, model.config.image_size, cache=False)
    out: list[np.ndarray] = []
    for batch in DataLoader(dataset, batch_size=batch_rankings, collate_fn=collate):
        rewards = model(batch["images"].to(model.device), **model.tokenize(batch["prompts"])).float().cpu().numpy()
        start = 0
        for index in batch["index"].tolist():
            n = len(rankings[index].candidates)
            out.append(rewards[start : start + n])
            start += n
    return out


def oracle_scores(ranking: Ranking, root) -> np.ndarray | None:
    """The shapes oracle's noise-free soft score of each candidate, or None for a prompt outside the world."""
    from itercomp.world import score
    from reward_models.data import load_image

    try:
        return np.array([score(load_image(root / c.path), ranking.prompt).score for c in ranking.candidates])
    except PromptError:
        return None


def evaluate_rankings(model: RewardModel, rankings: list[Ranking], root, oracle: bool = True) -> dict:
    """Pairwise accuracy on the rankings' own pairs and (where the oracle applies) on the oracle's pairs."""
    rewards = candidate_rewards(model, rankings, root)
    correct = total = oracle_correct = oracle_total = 0
    for ranking, r in zip(rankings, rewards):
        for b, w in ranking_pairs(ranking):
            correct += float(r[b] > r[w]) + 0.5 * float(r[b] == r[w])
            total += 1
        if oracle:
            s = oracle_scores(ranking, root)
            if s is None:
                continue
            for i in range(len(s)):
                for j in range(i + 1, len(s)):
                    if s[i] == s[j]:  # the oracle ties them: no pair
                        continue
                    hi, lo = (i, j) if s[i] > s[j] else (j, i)
                    oracle_correct += float(r[hi] > r[lo]) + 0.5 * float(r[hi] == r[lo])
                    oracle_total += 1
    result = {"rankings": len(rankings), "pairs": total, "pair_accuracy": correct / total if total else None}
    if oracle:
        result.update(
            oracle_pairs=oracle_total, oracle_agreement=oracle_correct / oracle_total if oracle_total else None
        )
    return result
