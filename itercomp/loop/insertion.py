"""Inserting a new model's images into an existing ranking with a reward model (the loop's gallery expansion).

The rule. The existing ranking's order is kept as it is (the humans' order of the originals, plus whatever
earlier rounds inserted); each new image goes into the gap g (0 = above everything, n = below everything) that
maximises

    L(g) = sum over the first g candidates i of (s_i - s_new)

where s are the aspect's reward-model scores. Why this quantity: the reward model is a Bradley-Terry model,
P(a beats b) = sigmoid(s_a - s_b), and L(g) is, up to a constant, the log-likelihood under it of all the pairs
between the new image and the existing candidates when the new image sits at gap g (moving it one gap down,
past candidate i, changes the log-likelihood by log sigmoid(s_i - s_new) - log sigmoid(s_new - s_i) =
s_i - s_new). So the chosen gap is the reward model's most likely place for the image given the fixed order.

- Where the reward model agrees with the humans (scores fall along their order), L rises while s_i > s_new and
  falls after, so the image lands exactly where its score sorts it, the top and the bottom included.
- Where it disagrees (it scores a lower-ranked original above a higher-ranked one), no single neighbour decides:
  the image goes below a stretch of the human order only if the originals in that stretch outscore it on
  average. IterComp's bottom-up scan instead stops at the first neighbour that scores higher, so one mis-scored
  original near the bottom pins every new image under it (and its script never considers the top position).
- Only score differences matter, so raw and normalised rewards give the same answer.
- Ties between gaps (equal scores) go to the lowest gap: without evidence, ranked images keep precedence.
- Several new images are placed independently against the existing order (so the result does not depend on the
  order they are inserted in); images that land in the same gap are ordered by score, best first.
- A ranking with ties (`ranks`, e.g. ImageReward imports) keeps its tied groups whole: new images go only between
  groups, and each gets a rank of its own.

Scores come from the caller as {image_id: score} for the ranking's aspect, computed once per image (an image is
in every ranking of its prompt) and cached on disk; nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from itercomp.errors import ItercompError
from itercomp.records import REWARD_MODEL_PREFIX, Candidate, Ranking


def best_gap(existing: Sequence[float], score: float, gaps: Sequence[int] | None = None) -> int:
    """The gap (0 = top, len(existing) = bottom) maximising sum_{i < gap} (existing[i] - score); ties go low.

    `existing` are the scores of the ranked candidates, best-ranked first; `gaps` restricts the allowed gaps
    (default: all of them)."""
    prefix = [0.0]
    for s in existing:
        prefix.append(prefix[-1] + (float(s) - float(score)))
    allowed = range(len(existing) + 1) if gaps is None else gaps
    return max(allowed, key=lambda g: (prefix[g], g))


def group_gaps(ranks: Sequence[int] | None, n: int) -> list[int]:
    """The gaps a new candidate may take: all of them, or only between tied groups when `ranks` has ties."""
    if ranks is None:
        return list(range(n + 1))
    return [g for g in range(n + 1) if g in (0, n) or ranks[g - 1] != ranks[g]]


def insert_candidates(
    ranking: Ranking,
    new: Sequence[Candidate],
    scores: Mapping[str, float],
    *,
    annotator: str,
    round: int,
) -> Ranking:
    """A new Ranking: `ranking` with the `new` candidates inserted by the rule in the module docstring.

    `scores` maps image ids to this aspect's reward scores and must cover every existing and new candidate;
    `annotator` is the reward model's id (`reward_model:<id>`; the prefix is added when missing)."""
    existing_ids = list(ranking.order)
    clash = [c.image_id for c in new if c.image_id in set(existing_ids)]
    if clash:
        raise ItercompError(
            f"ranking of {ranking.prompt_id}/{ranking.aspect} already holds {clash[0]}; insert only new images"
        )
    if len({c.image_id for c in new}) != len(new):
        raise ItercompError(f"the new candidates for {ranking.prompt_id}/{ranking.aspect} repeat an image id")
    missing = [i for i in [*existing_ids, *(c.image_id for c in new)] if i not in scores]
    if missing:
        raise ItercompError(
            f"no {ranking.aspect} reward score for image {missing[0]} (prompt {ranking.prompt_id}); "
            "score every candidate of the ranking before inserting"
        )
    existing = [scores[i] for i in existing_ids]
    gaps = group_gaps(ranking.ranks, len(existing_ids))
    placed: dict[int, list[Candidate]] = {}
    for candidate in new:
        placed.setdefault(best_gap(existing, scores[candidate.image_id], gaps), []).append(candidate)

    order: list[str] = []
    levels: list[tuple] = []  # what shares a rank: an existing candidate's tie group, or one new image alone
    for gap in range(len(existing_ids) + 1):
        for candidate in sorted(placed.get(gap, []), key=lambda c: (-scores[c.image_id], c.image_id)):
            order.append(candidate.image_id)
            levels.append(("new", candidate.image_id))
        if gap < len(existing_ids):
            order.append(existing_ids[gap])
            levels.append(("old", ranking.ranks[gap] if ranking.ranks is not None else gap))
    ranks = None
    if ranking.ranks is not None:
        ranks, level = [], 0
        for k, key in enumerate(levels):
            level += k == 0 or key != levels[k - 1]
            ranks.append(level)
    if not annotator.startswith(REWARD_MODEL_PREFIX):
        annotator = REWARD_MODEL_PREFIX + annotator
    return Ranking(
        prompt_id=ranking.prompt_id,
        prompt=ranking.prompt,
        aspect=ranking.aspect,
        candidates=[*ranking.candidates, *new],
        order=order,
        annotator=annotator,
        round=round,
        ranks=ranks,
    )
