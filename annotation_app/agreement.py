"""Agreement between annotators, per aspect: Kendall's tau between every pair of annotators who ranked the same
task (scipy's tau-b, which handles ties), and Krippendorff's alpha at the ordinal level over every
(task, candidate) unit (the `krippendorff` package)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations

import krippendorff
import numpy as np
from scipy.stats import kendalltau

from annotation_app.store import StoredRanking


def rank_vector(stored: StoredRanking, candidate_ids: Sequence[str]) -> list[float]:
    """Rank of each candidate (1 = best) in the given candidate order; tied candidates share a rank."""
    order = stored.ranking.order
    ranks = stored.ranks if stored.ranks is not None else list(range(1, len(order) + 1))
    by_id = dict(zip(order, ranks))
    return [float(by_id[c]) for c in candidate_ids]


def pairwise_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two rank vectors; NaN when either is constant (no order to agree on)."""
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(kendalltau(x, y).statistic)


def alpha(vectors_by_annotator: dict[str, dict[tuple, float]]) -> float:
    """Krippendorff's ordinal alpha: rows are annotators, columns (task, candidate) units, NaN where missing."""
    units = sorted({u for vector in vectors_by_annotator.values() for u in vector})
    if len(vectors_by_annotator) < 2 or not units:
        return math.nan
    data = np.full((len(vectors_by_annotator), len(units)), np.nan)
    column = {u: j for j, u in enumerate(units)}
    for i, vector in enumerate(vectors_by_annotator.values()):
        for unit, value in vector.items():
            data[i, column[unit]] = value
    pairable = (~np.isnan(data)).sum(axis=0) >= 2
    if pairable.sum() == 0 or len(np.unique(data[:, pairable][~np.isnan(data[:, pairable])])) < 2:
        return math.nan
    return float(krippendorff.alpha(reliability_data=data[:, pairable], level_of_measurement="ordinal"))


def agreement(stored: Sequence[StoredRanking]) -> dict[str, dict]:
    """Per aspect: counts, mean Kendall tau (overall and per annotator pair) and Krippendorff's alpha."""
    by_aspect: dict[str, list[StoredRanking]] = defaultdict(list)
    for s in stored:
        by_aspect[s.ranking.aspect].append(s)
    report = {}
    for aspect in sorted(by_aspect):
        items = by_aspect[aspect]
        by_task: dict[int, list[StoredRanking]] = defaultdict(list)
        for s in items:
            by_task[s.task_id].append(s)
        taus: list[float] = []
        per_pair: dict[tuple[str, str], list[float]] = defaultdict(list)
        vectors: dict[str, dict[tuple, float]] = defaultdict(dict)
        for task_id, group in by_task.items():
            ids = sorted(c.image_id for c in group[0].ranking.candidates)
            ranked = {s.ranking.annotator: rank_vector(s, ids) for s in group}
            for name, vector in ranked.items():
                for image, value in zip(ids, vector):
                    vectors[name][(task_id, image)] = value
            for a, b in combinations(sorted(ranked), 2):
                tau = pairwise_tau(ranked[a], ranked[b])
                if not math.isnan(tau):
                    taus.append(tau)
                    per_pair[(a, b)].append(tau)
        report[aspect] = {
            "rankings": len(items),
            "annotators": len({s.ranking.annotator for s in items}),
            "tasks": len(by_task),
            "tasks_with_2_or_more": sum(1 for g in by_task.values() if len(g) >= 2),
            "kendall_tau_mean": float(np.mean(taus)) if taus else None,
            "kendall_tau_comparisons": len(taus),
            "kendall_tau_pairs": [
                {"annotators": list(pair), "tasks": len(values), "tau": float(np.mean(values))}
                for pair, values in sorted(per_pair.items())
            ],
            "krippendorff_alpha": _none_if_nan(alpha(dict(vectors))),
        }
    return report


def format_agreement(report: dict[str, dict]) -> str:
    if not report:
        return "no rankings yet"
    header = f"{'aspect':<26} {'rankings':>8} {'tasks':>6} {'shared':>6} {'tau':>7} {'alpha':>7}"
    lines = [header, "-" * len(header)]
    for aspect, r in report.items():
        tau = "n/a" if r["kendall_tau_mean"] is None else f"{r['kendall_tau_mean']:.3f}"
        a = "n/a" if r["krippendorff_alpha"] is None else f"{r['krippendorff_alpha']:.3f}"
        lines.append(f"{aspect:<26} {r['rankings']:>8} {r['tasks']:>6} {r['tasks_with_2_or_more']:>6} {tau:>7} {a:>7}")
    lines.append("shared: tasks ranked by >= 2 annotators; tau: mean Kendall tau-b over annotator pairs on a task;")
    lines.append("alpha: Krippendorff's alpha (ordinal) over (task, image) ranks; n/a: no task has 2 rankings")
    return "\n".join(lines)


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x
