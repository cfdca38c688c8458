"""Tasks and their hand-out: tasks registered from galleries, each candidate's blind id (slot), and the next task
for an annotator with the submission key its ranking is stored under."""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection

from annotation_app.database import Database
from annotation_app.schema import MAX_SQL_INTEGER, annotators, rankings, submission_keys, task_slots, tasks
from annotation_app.tasks import TaskSpec, inside
from annotation_app.validation import SubmissionError
from itercomp.errors import ItercompError
from itercomp.records import Candidate
from itercomp.world.vocab import REWARD_ASPECTS

# The statements of the hand-out, built once: building a SQLAlchemy expression costs more CPU than running it on
# SQLite.
_open_key = (
    select(submission_keys)
    .join(tasks, tasks.c.id == submission_keys.c.task_id)
    .where(
        submission_keys.c.annotator == bindparam("p_annotator"),
        submission_keys.c.submitted.is_(False),
        tasks.c.round == bindparam("p_round"),
        tasks.c.n_rankings < bindparam("p_overlap"),
    )
    .order_by(submission_keys.c.issued_at.desc())
    .limit(1)
)
_annotator_exists = select(annotators.c.name).where(annotators.c.name == bindparam("p_annotator"))
_ranked_by = select(rankings.c.id).where(
    rankings.c.annotator == bindparam("p_annotator"), rankings.c.task_id == bindparam("p_task")
)
_pending = (
    select(submission_keys.c.task_id, func.count())
    .where(
        submission_keys.c.submitted.is_(False),
        submission_keys.c.issued_at > bindparam("p_since"),
        submission_keys.c.annotator != bindparam("p_annotator"),
    )
    .group_by(submission_keys.c.task_id)
)
_open_tasks = select(tasks.c.id, tasks.c.n_rankings).where(
    tasks.c.round == bindparam("p_round"),
    tasks.c.n_rankings < bindparam("p_overlap"),
    tasks.c.id.not_in(select(rankings.c.task_id).where(rankings.c.annotator == bindparam("p_annotator"))),
)
_insert_key = submission_keys.insert()


@dataclass
class Assignment:
    """A task handed to one annotator: the key to submit under and the order the images are shown in."""

    key: str
    task_id: int
    task: TaskSpec
    shown_order: list[str]  # image ids
    issued_at: float
    slots: dict[str, str] = field(default_factory=dict)  # image id -> the task's blind id for it

    @property
    def shown_slots(self) -> list[str]:
        """The shown order as blind ids: what annotators see and submit."""
        return [self.slots[i] for i in self.shown_order]

    def to_dict(self) -> dict:
        """The task as annotators get it: blind ids and image URLs that do not name the generator."""
        return {
            "submission_key": self.key,
            "task_id": self.task_id,
            "prompt_id": self.task.prompt_id,
            "prompt": self.task.prompt,
            "aspect": self.task.aspect,
            "candidates": [
                {"image_id": slot, "url": f"/api/images/{self.task_id}/{slot}"} for slot in self.shown_slots
            ],
        }


class TaskStore(Database):
    """Tasks, slots and assignment (a part of annotation_app.store.Store)."""

    def __init__(self, db: str | Path, *, create: bool = True):
        # A task's prompt, candidates and slots never change once stored, so they are read once per process.
        self._task_cache: dict[int, TaskSpec] = {}
        self._slot_cache: dict[int, dict[str, str]] = {}
        super().__init__(db, create=create)

    def add_tasks(self, specs: Sequence[TaskSpec], round: int = 0) -> tuple[int, int]:
        """Register tasks; returns (added, already present). Loading the same gallery twice changes nothing."""
        with self._transaction(write=True) as conn:
            added, present, _ = self._add_tasks(conn, specs, round)
        self._task_cache.clear()
        self._slot_cache.clear()
        return added, present

    def _add_tasks(self, conn: Connection, specs: Sequence[TaskSpec], round: int) -> tuple[int, int, list[int]]:
        """`add_tasks` inside the caller's write transaction; also returns the task ids, one per spec."""
        added = present = 0
        ids = []
        for spec in specs:
            if spec.aspect not in REWARD_ASPECTS:
                raise ItercompError(f"task aspect must be one of {REWARD_ASPECTS}, got {spec.aspect!r}")
            for c in spec.candidates:  # the server shows these files to annotators
                inside(spec.gallery_dir or "the gallery folder", c.path, f"prompt {spec.prompt_id} image {c.image_id}")
            row = conn.execute(
                select(tasks.c.id, tasks.c.candidates).where(
                    tasks.c.round == round, tasks.c.prompt_id == spec.prompt_id, tasks.c.aspect == spec.aspect
                )
            ).first()
            values = {
                "prompt": spec.prompt,
                "prompt_aspect": spec.prompt_aspect or spec.aspect,
                "gallery_dir": spec.gallery_dir,
                "candidates": [c.to_dict() for c in spec.candidates],
            }
            if row is None:
                result = conn.execute(
                    tasks.insert().values(
                        round=round, prompt_id=spec.prompt_id, aspect=spec.aspect, n_rankings=0, **values
                    )
                )
                task_id = int(result.inserted_primary_key[0])
                added += 1
            else:
                if sorted(c["image_id"] for c in row.candidates) != sorted(spec.candidate_ids):
                    raise ItercompError(
                        f"round {round} already has a task for prompt {spec.prompt_id} ({spec.aspect}) with other "
                        "candidate images; load this gallery with another --round or into a new --db"
                    )
                # Same images: keep the task, but follow the gallery if its folder moved.
                conn.execute(tasks.update().where(tasks.c.id == row.id).values(**values))
                task_id = row.id
                present += 1
            self._load_slots(conn, task_id, spec.candidate_ids)
            ids.append(task_id)
        return added, present, ids

    def task(self, task_id: int, conn: Connection | None = None) -> TaskSpec:
        """A task by id (cached: a task's prompt and candidates never change once stored)."""
        spec = self._task_cache.get(task_id)
        if spec is None:
            if conn is None:
                with self._transaction(write=False) as own:
                    row = own.execute(select(tasks).where(tasks.c.id == task_id)).first()
            else:
                row = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
            if row is None:
                raise ItercompError(f"no task with id {task_id}")
            spec = _spec(row)
            self._task_cache[task_id] = spec
        return spec

    def slots(self, task_id: int, conn: Connection | None = None) -> dict[str, str]:
        """The task's blind ids: image id -> slot id (cached: they never change once made)."""
        cached = self._slot_cache.get(task_id)
        if cached is None:
            if conn is not None:
                cached = self._load_slots(conn, task_id, self.task(task_id, conn).candidate_ids)
            else:
                with self._transaction(write=False) as own:
                    cached = self._load_slots(own, task_id, self.task(task_id, own).candidate_ids, create=False)
                if cached is None:  # a task stored by an older version: it gets its slots now
                    with self._transaction(write=True) as own:
                        cached = self._load_slots(own, task_id, self.task(task_id, own).candidate_ids)
            self._slot_cache[task_id] = cached
        return cached

    def _load_slots(
        self, conn: Connection, task_id: int, image_ids: Sequence[str], create: bool = True
    ) -> dict[str, str] | None:
        """The task's slots, making random ones for images that have none (in the caller's write transaction);
        with `create=False`, None when some are missing."""
        found = dict(
            conn.execute(
                select(task_slots.c.image_id, task_slots.c.slot_id).where(task_slots.c.task_id == task_id)
            ).all()
        )
        missing = [i for i in image_ids if i not in found]
        if missing and not create:
            return None
        for image in missing:
            found[image] = secrets.token_hex(8)
            conn.execute(task_slots.insert().values(slot_id=found[image], task_id=task_id, image_id=image))
        return {i: found[i] for i in image_ids}

    def image_for_slot(self, task_id: int, slot_id: str) -> str | None:
        """The image id behind a task's blind id, or None if the task has no such slot."""
        if not 0 < task_id <= MAX_SQL_INTEGER:
            return None
        try:
            slots = self.slots(task_id)
        except ItercompError:  # no such task
            return None
        return next((image for image, slot in slots.items() if slot == slot_id), None)

    def find_task(self, round: int, prompt_id: str, aspect: str) -> int | None:
        with self._transaction(write=False) as conn:
            return conn.execute(
                select(tasks.c.id).where(
                    tasks.c.round == round, tasks.c.prompt_id == prompt_id, tasks.c.aspect == aspect
                )
            ).scalar_one_or_none()

    def ranked_task_ids(self, annotator: str) -> set[int]:
        with self._transaction(write=False) as conn:
            return set(conn.execute(select(rankings.c.task_id).where(rankings.c.annotator == annotator)).scalars())

    def task_ids(self, round: int | None = None) -> list[int]:
        query = select(tasks.c.id).order_by(tasks.c.id)
        if round is not None:
            query = query.where(tasks.c.round == round)
        with self._transaction(write=False) as conn:
            return list(conn.execute(query).scalars())

    def next_task(
        self, annotator: str, *, overlap: int = 1, round: int = 0, lease_seconds: float = 1800.0
    ) -> Assignment | None:
        """The task this annotator should do next, with a submission key; None when nothing is left for them.

        An open (issued, not yet submitted) task of the annotator comes back unchanged, so a reload shows the same
        images in the same order. Otherwise: a task they have not ranked that has fewer than `overlap` rankings,
        fewest rankings first (tasks issued to others in the last `lease_seconds` count as half-done), ties
        broken by a per-annotator hash so that annotators starting together spread over different tasks.
        """
        stamp = time.time()
        who = {"p_annotator": annotator, "p_round": round, "p_overlap": overlap}
        with self._transaction(write=True) as conn:
            if conn.execute(_annotator_exists, who).first() is None:
                raise SubmissionError(403, f"unknown annotator {annotator!r}; add it with `itercomp annotate add-user`")
            open_key = conn.execute(_open_key, who).first()
            if open_key is not None and not conn.execute(_ranked_by, {**who, "p_task": open_key.task_id}).first():
                return Assignment(
                    open_key.key, open_key.task_id, self.task(open_key.task_id, conn), list(open_key.shown_order),
                    open_key.issued_at, self.slots(open_key.task_id, conn),
                )  # fmt: skip
            pending = dict(conn.execute(_pending, {**who, "p_since": stamp - lease_seconds}).all())
            rows = conn.execute(_open_tasks, who).all()
            if not rows:
                return None
            task_id = min(rows, key=lambda r: (r.n_rankings + 0.5 * pending.get(r.id, 0), _spread(annotator, r.id))).id
            spec = self.task(task_id, conn)
            key = secrets.token_urlsafe(24)
            shown = spec.candidate_ids
            random.Random(key).shuffle(shown)  # the key is random, so the shown order is too; it is recorded
            conn.execute(
                _insert_key,
                {"key": key, "annotator": annotator, "task_id": task_id, "shown_order": shown, "issued_at": stamp,
                 "submitted": False},
            )  # fmt: skip
            slots = self.slots(task_id, conn)
        return Assignment(key, task_id, spec, shown, stamp, slots)

    def issue_key(self, annotator: str, task_id: int, shown_order: list[str] | None = None) -> Assignment:
        """A submission key for a given task (importers and tools that choose their own tasks)."""
        with self._transaction(write=True) as conn:
            return self._issue_key(conn, annotator, task_id, shown_order)

    def _issue_key(
        self, conn: Connection, annotator: str, task_id: int, shown_order: list[str] | None = None
    ) -> Assignment:
        spec = self.task(task_id, conn)
        shown = list(shown_order) if shown_order is not None else spec.candidate_ids
        key, stamp = secrets.token_urlsafe(24), time.time()
        conn.execute(
            submission_keys.insert().values(
                key=key, annotator=annotator, task_id=task_id, shown_order=shown, issued_at=stamp, submitted=False
            )
        )
        return Assignment(key, task_id, spec, shown, stamp, self.slots(task_id, conn))


def _spread(annotator: str, task_id: int) -> str:
    return hashlib.sha1(f"{annotator}\0{task_id}".encode()).hexdigest()


def _spec(row) -> TaskSpec:
    return TaskSpec(
        prompt_id=row.prompt_id,
        prompt=row.prompt,
        aspect=row.aspect,
        candidates=[Candidate.from_dict(c) for c in row.candidates],
        prompt_aspect=row.prompt_aspect,
        gallery_dir=row.gallery_dir,
    )
