"""What the store refuses, as pure checks: a refused submission (with the HTTP status the API answers with) and
the checks of a submitted order and of tie-aware ranks."""

from __future__ import annotations

from collections.abc import Sequence

from itercomp.errors import ItercompError


class SubmissionError(ItercompError):
    """A submission the store refuses; `status` is the HTTP status the API answers with. Nothing was written.

    `headers` go with the API's answer (e.g. Retry-After); `index` says which item of a batch was refused."""

    def __init__(self, status: int, message: str, *, headers: dict | None = None, index: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.index = index


def check_order(order, candidate_ids: Sequence[str]) -> None:
    """Raise SubmissionError(422) saying what to fix unless `order` ranks every candidate exactly once."""
    n = len(candidate_ids)
    if not isinstance(order, list):
        raise SubmissionError(422, f"order must be a list of the {n} candidate image ids, best first")
    bad = [i for i, x in enumerate(order) if not isinstance(x, str)]
    if bad:
        raise SubmissionError(422, f"order must contain image ids (strings); item {bad[0]} is {order[bad[0]]!r}")
    known = set(candidate_ids)
    unknown = [x for x in order if x not in known]
    if unknown:
        raise SubmissionError(
            422,
            f"order names {len(unknown)} unknown candidate id(s) ({', '.join(unknown[:3])}); "
            f"this task's candidates are {', '.join(candidate_ids)}",
        )
    repeated = sorted({x for x in order if order.count(x) > 1})
    if repeated:
        raise SubmissionError(
            422, f"order lists {', '.join(repeated)} more than once: give each candidate exactly one rank"
        )
    missing = [x for x in candidate_ids if x not in set(order)]
    if missing:
        raise SubmissionError(
            422,
            f"the ranking is incomplete: {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no rank; "
            f"rank all {n} candidates",
        )


def check_ranks(ranks, n: int) -> None:
    """Tie-aware ranks (imports): one integer per entry of the order, non-decreasing (best first)."""
    if not isinstance(ranks, list) or len(ranks) != n or not all(isinstance(r, int) for r in ranks):
        raise SubmissionError(422, f"ranks must be a list of {n} integers, one per entry of order")
    if any(b < a for a, b in zip(ranks, ranks[1:])):
        raise SubmissionError(422, "ranks must not decrease along order (order is best first; equal ranks are ties)")
