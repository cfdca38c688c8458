"""Rankings: submissions, imports and the reads that progress, agreement and export use.

Submissions are idempotent. The server issues a random submission key with each task it hands out; a ranking is
stored under that key. Sending the same key again with the same order returns the stored ranking (a retry after a
lost response); the same key with another order, or a second ranking of the same prompt and aspect by the same
annotator, is refused. Unique constraints in the schema back both rules, so they hold across processes too."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError

from annotation_app.assignment import TaskStore
from annotation_app.schema import annotators, rankings, submission_keys, tasks
from annotation_app.tasks import TaskSpec
from annotation_app.users import UserStore
from annotation_app.validation import SubmissionError, check_order, check_ranks
from itercomp.records import Candidate, Ranking, now

MAX_SECONDS_SPENT = 7 * 24 * 3600.0

# The statements of submission, built once (see annotation_app.assignment).
_key = select(submission_keys).where(submission_keys.c.key == bindparam("p_key"))
_existing = select(rankings.c.id, rankings.c.submission_key, rankings.c.order_ids, rankings.c.ranks).where(
    or_(
        rankings.c.submission_key == bindparam("p_key"),
        and_(rankings.c.annotator == bindparam("p_annotator"), rankings.c.task_id == bindparam("p_task")),
    )
)
_mark_key = submission_keys.update().where(submission_keys.c.key == bindparam("p_key")).values(submitted=True)
_count_ranking = tasks.update().where(tasks.c.id == bindparam("p_task")).values(n_rankings=tasks.c.n_rankings + 1)
_insert_ranking = rankings.insert()


@dataclass
class Submitted:
    ranking_id: int
    replay: bool  # True: this key was already stored with the same order; nothing new was written


@dataclass
class StoredRanking:
    """A ranking as stored, with what the interchange formats need beside `itercomp.records.Ranking`."""

    id: int
    ranking: Ranking
    annotator_kind: str
    task_id: int
    submission_key: str
    gallery_dir: str
    ranks: list[int] | None = None  # aligned with ranking.order; equal values are ties
    extra: dict = field(default_factory=dict)

    def pairs(self) -> list[tuple[str, str]]:
        """(better, worse) image-id pairs; tied candidates give no pair."""
        if self.ranks is None:
            return self.ranking.pairs()
        order, ranks = self.ranking.order, self.ranks
        return [
            (order[i], order[j]) for i in range(len(order)) for j in range(i + 1, len(order)) if ranks[i] < ranks[j]
        ]


class RankingStore(TaskStore, UserStore):
    """Submissions, imports and reading rankings (a part of annotation_app.store.Store): a ranking stands on a
    task and an annotator, so this part builds on those two."""

    def submit(
        self,
        annotator: str,
        key: str,
        order: list[str],
        *,
        prompt_id: str | None = None,
        aspect: str | None = None,
        seconds_spent: float | None = None,
        ranks: list[int] | None = None,
        blind: bool = False,
    ) -> Submitted:
        """Store one ranking under a submission key; raises SubmissionError (nothing written) when it is refused.

        `blind=True`: `order` names the task's blind ids (what annotators were shown, see `slots`), not image ids;
        the ranking is stored with the image ids behind them."""
        if not isinstance(key, str) or not key:
            raise SubmissionError(422, "submission_key is missing: send the key that came with the task")
        if seconds_spent is not None:
            if isinstance(seconds_spent, bool) or not isinstance(seconds_spent, int | float):
                raise SubmissionError(422, f"seconds_spent must be a number of seconds, got {seconds_spent!r}")
            if not 0 <= seconds_spent <= MAX_SECONDS_SPENT:
                raise SubmissionError(
                    422, f"seconds_spent must be between 0 and {MAX_SECONDS_SPENT:.0f}, got {seconds_spent}"
                )
        for attempt in range(2):
            try:
                with self._transaction(write=True) as conn:
                    return self._submit(conn, annotator, key, order, prompt_id, aspect, seconds_spent, ranks, blind)
            except IntegrityError:
                # Another transaction inserted the same key or task first (possible on servers that do not
                # serialise writers, e.g. PostgreSQL); the second pass sees its row and answers from it.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _submit(self, conn, annotator, key, order, prompt_id, aspect, seconds_spent, ranks, blind) -> Submitted:
        """`submit` inside the caller's write transaction."""
        issued = conn.execute(_key, {"p_key": key}).first()
        if issued is None:
            raise SubmissionError(
                422, "unknown submission_key: fetch a task with GET /api/tasks/next and submit with its key"
            )
        if issued.annotator != annotator:
            raise SubmissionError(403, "this submission_key was issued to another annotator; fetch your own task first")
        spec = self.task(issued.task_id, conn)
        if prompt_id is not None and prompt_id != spec.prompt_id:
            raise SubmissionError(
                422, f"prompt_id {prompt_id!r} does not match this submission_key's task ({spec.prompt_id!r})"
            )
        if aspect is not None and aspect != spec.aspect:
            raise SubmissionError(
                422, f"wrong aspect {aspect!r}: this task is ranked for {spec.aspect!r}; send that aspect"
            )
        if blind:
            slots = self.slots(issued.task_id, conn)
            check_order(order, [slots[i] for i in spec.candidate_ids])
            image_of = {slot: image for image, slot in slots.items()}
            order = [image_of[slot] for slot in order]
        else:
            check_order(order, spec.candidate_ids)
        if ranks is not None:
            check_ranks(ranks, len(order))
            if len(set(ranks)) == len(ranks):
                ranks = None  # no ties: the order says it all
        found = conn.execute(_existing, {"p_key": key, "p_annotator": annotator, "p_task": issued.task_id}).all()
        stored = next((r for r in found if r.submission_key == key), None)
        if stored is not None:
            if list(stored.order_ids) == list(order) and stored.ranks == ranks:
                return Submitted(stored.id, replay=True)
            raise SubmissionError(
                409, f"this submission_key was already used with another order (ranking {stored.id}); "
                "rankings cannot be changed, fetch the next task",
            )  # fmt: skip
        if found:
            raise SubmissionError(
                409, f"you already ranked prompt {spec.prompt_id} for {spec.aspect} (ranking {found[0].id}); "
                "one ranking per annotator, prompt and aspect",
            )  # fmt: skip
        if seconds_spent is None:
            seconds_spent = max(0.0, min(time.time() - issued.issued_at, MAX_SECONDS_SPENT))
        conn.execute(_mark_key, {"p_key": key})
        conn.execute(_count_ranking, {"p_task": issued.task_id})
        result = conn.execute(
            _insert_ranking,
            {
                "submission_key": key,
                "annotator": annotator,
                "task_id": issued.task_id,
                "order_ids": list(order),
                "ranks": list(ranks) if ranks is not None else None,
                "shown_order": list(issued.shown_order),
                "seconds_spent": float(seconds_spent),
                "created_at": now(),
            },
        )
        return Submitted(int(result.inserted_primary_key[0]), replay=False)

    def import_rankings(
        self,
        annotator: str,
        specs: Sequence[TaskSpec],
        items: Sequence[tuple[int, list[str], list[int] | None]],
        round: int = 0,
    ) -> dict:
        """Store rankings from a file as `annotator` (kind "imported") in one transaction: all of them or, when one
        is refused, nothing (no annotator, task or key either). `items` are (index into `specs`, order of image
        ids best first, tie-aware ranks or None); a task the annotator ranked already is skipped. A refusal is a
        SubmissionError whose `index` names the item."""
        added = present = 0
        try:
            with self._transaction(write=True) as conn:
                self._ensure_annotator(conn, annotator, "imported")
                tasks_added, _, ids = self._add_tasks(conn, specs, round)
                done = set(conn.execute(select(rankings.c.task_id).where(rankings.c.annotator == annotator)).scalars())
                for index, (spec_index, order, ranks) in enumerate(items):
                    task_id = ids[spec_index]
                    if task_id in done:
                        present += 1
                        continue
                    key = self._issue_key(conn, annotator, task_id).key
                    try:
                        self._submit(conn, annotator, key, order, None, None, None, ranks, False)
                    except SubmissionError as e:
                        raise SubmissionError(e.status, e.message, index=index) from None
                    done.add(task_id)
                    added += 1
        finally:  # ids read inside a transaction that rolled back may be handed out again
            self._task_cache.clear()
            self._slot_cache.clear()
        return {"added": added, "already_there": present, "tasks_added": tasks_added}

    def progress(self, annotator: str | None = None, *, overlap: int = 1, round: int = 0) -> dict:
        """Your rankings, and overall: rankings towards the target of `overlap` per task, tasks complete."""
        with self._transaction(write=False) as conn:
            counts = conn.execute(select(tasks.c.n_rankings.label("n")).where(tasks.c.round == round)).all()
            yours = 0
            if annotator is not None:
                yours = conn.execute(
                    select(func.count(rankings.c.id))
                    .join(tasks, tasks.c.id == rankings.c.task_id)
                    .where(rankings.c.annotator == annotator, tasks.c.round == round)
                ).scalar_one()
        return {
            "annotator": annotator,
            "you_done": yours,
            "tasks": len(counts),
            "tasks_complete": sum(1 for r in counts if r.n >= overlap),
            "rankings": sum(r.n for r in counts),
            "target": len(counts) * overlap,
            "towards_target": sum(min(r.n, overlap) for r in counts),
            "overlap": overlap,
            "round": round,
        }

    def stored_rankings(self, round: int | None = None, kinds: Sequence[str] | None = None) -> list[StoredRanking]:
        query = (
            select(rankings, tasks, annotators.c.kind)
            .join(tasks, tasks.c.id == rankings.c.task_id)
            .join(annotators, annotators.c.name == rankings.c.annotator)
            .order_by(rankings.c.id)
        )
        if round is not None:
            query = query.where(tasks.c.round == round)
        if kinds is not None:
            query = query.where(annotators.c.kind.in_(list(kinds)))
        with self._transaction(write=False) as conn:
            rows = conn.execute(query).all()
        out = []
        for row in rows:
            m = row._mapping
            ranking = Ranking(
                prompt_id=m[tasks.c.prompt_id],
                prompt=m[tasks.c.prompt],
                aspect=m[tasks.c.aspect],
                candidates=[Candidate.from_dict(c) for c in m[tasks.c.candidates]],
                order=list(m[rankings.c.order_ids]),
                annotator=m[rankings.c.annotator],
                round=m[tasks.c.round],
                created_at=m[rankings.c.created_at],
                shown_order=list(m[rankings.c.shown_order]) if m[rankings.c.shown_order] is not None else None,
                seconds_spent=m[rankings.c.seconds_spent],
            )
            out.append(
                StoredRanking(
                    id=m[rankings.c.id],
                    ranking=ranking,
                    annotator_kind=m[annotators.c.kind],
                    task_id=m[rankings.c.task_id],
                    submission_key=m[rankings.c.submission_key],
                    gallery_dir=m[tasks.c.gallery_dir],
                    ranks=list(m[rankings.c.ranks]) if m[rankings.c.ranks] is not None else None,
                )
            )
        return out

    def count_rankings(self) -> int:
        with self._transaction(write=False) as conn:
            return conn.execute(select(func.count(rankings.c.id))).scalar_one()
