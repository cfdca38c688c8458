"""The annotation store: users, tasks, submission keys and rankings in one SQL database.

Through SQLAlchemy: SQLite by default (WAL, and every write transaction opened with `BEGIN IMMEDIATE` so that
concurrent writers queue on the busy timeout instead of failing with "database is locked"), PostgreSQL or any
other server by URL.

Submissions are idempotent. The server issues a random submission key with each task it hands out; a ranking is
stored under that key. Sending the same key again with the same order returns the stored ranking (a retry after a
lost response); the same key with another order, or a second ranking of the same prompt and aspect by the same
annotator, is refused. Unique constraints in the schema back both rules, so they hold across processes too.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    or_,
    select,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import StaticPool

from annotation_app.passwords import hash_password, verify_password
from annotation_app.tasks import TaskSpec
from itercomp.errors import ItercompError
from itercomp.records import Candidate, Ranking, now
from itercomp.world.vocab import REWARD_ASPECTS

KINDS = ("human", "simulated", "imported")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
MAX_SECONDS_SPENT = 7 * 24 * 3600.0

metadata = MetaData()

annotators = Table(
    "annotators",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("password_hash", String(200)),  # NULL: cannot log in (simulated and imported annotators)
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", String(40), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),  # only the hash is stored
    Column("annotator", String(64), ForeignKey("annotators.name"), nullable=False),
    Column("created_at", String(40), nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("round", Integer, nullable=False),
    Column("prompt_id", String(64), nullable=False),
    Column("aspect", String(40), nullable=False),
    Column("prompt", Text, nullable=False),
    Column("prompt_aspect", String(40), nullable=False),
    Column("gallery_dir", Text, nullable=False),
    Column("candidates", JSON, nullable=False),  # list of Candidate dicts, gallery order
    # Kept equal to the number of rankings of the task by `submit` (same transaction), so that assignment
    # reads one column instead of counting rankings on every request.
    Column("n_rankings", Integer, nullable=False, default=0),
    UniqueConstraint("round", "prompt_id", "aspect", name="one_task_per_prompt_aspect"),
)

submission_keys = Table(
    "submission_keys",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("annotator", String(64), ForeignKey("annotators.name"), nullable=False),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("shown_order", JSON, nullable=False),
    Column("issued_at", Float, nullable=False),  # unix seconds
    Column("submitted", Boolean, nullable=False, default=False),  # set by the ranking stored under this key
    Index("ix_keys_annotator", "annotator", "submitted"),
    Index("ix_keys_open", "submitted", "issued_at"),
)

rankings = Table(
    "rankings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("submission_key", String(64), ForeignKey("submission_keys.key"), nullable=False, unique=True),
    Column("annotator", String(64), ForeignKey("annotators.name"), nullable=False),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("order_ids", JSON, nullable=False),  # candidate image ids, best first
    Column("ranks", JSON),  # one rank per entry of order_ids when ties exist (imports only); NULL: strict order
    Column("shown_order", JSON),
    Column("seconds_spent", Float),
    Column("created_at", String(40), nullable=False),
    UniqueConstraint("annotator", "task_id", name="one_ranking_per_annotator_task"),
    Index("ix_rankings_task", "task_id"),
)


# The statements of the hot paths (task hand-out and submission), built once: building a SQLAlchemy expression
# costs more CPU than running it on SQLite.
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


class SubmissionError(ItercompError):
    """A submission the store refuses; `status` is the HTTP status the API answers with. Nothing was written."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Assignment:
    """A task handed to one annotator: the key to submit under and the order the images are shown in."""

    key: str
    task_id: int
    task: TaskSpec
    shown_order: list[str]
    issued_at: float

    def to_dict(self) -> dict:
        by_id = {c.image_id: c for c in self.task.candidates}
        return {
            "submission_key": self.key,
            "task_id": self.task_id,
            "prompt_id": self.task.prompt_id,
            "prompt": self.task.prompt,
            "aspect": self.task.aspect,
            "candidates": [
                {"image_id": i, "path": by_id[i].path, "url": f"/api/images/{self.task_id}/{i}"}
                for i in self.shown_order
            ],
        }


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


def database_url(db: str | Path) -> str:
    """A SQLAlchemy URL; a plain path means a SQLite file."""
    db = str(db)
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def _sqlite_engine(url: str) -> Engine:
    memory = url in ("sqlite://", "sqlite:///:memory:")
    engine = create_engine(
        url,
        # The busy timeout is what BEGIN IMMEDIATE waits on while another writer holds the lock.
        connect_args={"timeout": 60, "check_same_thread": False},
        **({"poolclass": StaticPool} if memory else {"pool_size": 32, "max_overflow": 32, "pool_timeout": 60}),
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed ranking survives a power cut, not only a crash of the server.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection):
        # A deferred transaction that later writes fails at once with "database is locked" when another writer
        # got there first, whatever the busy timeout; IMMEDIATE takes the write lock up front and waits for it.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Store:
    """All reads and writes of the annotation app. Thread-safe; several processes may share one database."""

    def __init__(self, db: str | Path):
        self.url = database_url(db)
        self.is_sqlite = self.url.startswith("sqlite")
        self._task_cache: dict[int, TaskSpec] = {}
        self._write_lock = threading.Lock()
        try:
            self.engine = (
                _sqlite_engine(self.url) if self.is_sqlite else create_engine(self.url, pool_size=32, max_overflow=32)
            )
            self._create_tables()
        except ImportError as e:
            raise ItercompError(
                f"no database driver for {self.url.split('://')[0]} ({e}); for PostgreSQL run "
                "`pip install 'psycopg[binary]'` and use postgresql+psycopg://user:pass@host/db"
            ) from None
        except Exception as e:  # noqa: BLE001 - connection problems are the user's to fix
            if isinstance(e, ItercompError):
                raise
            raise ItercompError(f"cannot open the annotation database {self.url}: {e}") from None

    def _create_tables(self) -> None:
        # Inside a write transaction, so two processes opening a new SQLite database together take turns; a
        # server that lets them race (PostgreSQL) makes the loser fail, and its second look finds the tables.
        for attempt in range(3):
            try:
                with self._transaction(write=True) as conn:
                    metadata.create_all(conn)
                return
            except DBAPIError:
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Connection]:
        # SQLite has one writer at a time. Threads of this process queue on a lock (woken the moment it is free)
        # rather than on SQLite's busy handler, which sleeps in growing steps up to 100 ms and leaves the database
        # idle between writers; other processes still queue on the busy timeout.
        lock = self._write_lock if write and self.is_sqlite else nullcontext()
        with lock, self.engine.connect() as conn:
            if self.is_sqlite:
                conn.execution_options(sqlite_begin="IMMEDIATE" if write else "DEFERRED")
            with conn.begin():
                yield conn

    # ---------------------------------------------------------------- users and tokens

    def add_user(
        self, name: str, password: str | None = None, *, kind: str = "human", admin: bool = False, replace=False
    ) -> None:
        if not NAME_PATTERN.match(name or ""):
            raise ItercompError(
                f"annotator name {name!r} is not allowed: use 1-64 letters, digits and . _ @ : - (starting with a "
                "letter or digit)"
            )
        if kind not in KINDS:
            raise ItercompError(f"annotator kind must be one of {KINDS}, got {kind!r}")
        if kind == "human" and not password:
            raise ItercompError(f"annotator {name} needs a non-empty password")
        row = {
            "name": name,
            "kind": kind,
            "password_hash": hash_password(password) if password else None,
            "is_admin": admin,
            "created_at": now(),
        }
        with self._transaction(write=True) as conn:
            existing = conn.execute(select(annotators.c.name).where(annotators.c.name == name)).first()
            if existing and not replace:
                raise ItercompError(f"annotator {name} exists already; pass --reset to set a new password")
            if existing:
                conn.execute(annotators.update().where(annotators.c.name == name).values(**row))
                conn.execute(api_tokens.delete().where(api_tokens.c.annotator == name))
            else:
                conn.execute(annotators.insert().values(**row))

    def ensure_annotator(self, name: str, kind: str) -> None:
        """Create a password-less annotator (simulated or imported) unless it exists."""
        with self._transaction(write=False) as conn:
            row = conn.execute(select(annotators.c.kind).where(annotators.c.name == name)).first()
        if row is None:
            try:
                self.add_user(name, None, kind=kind)
            except ItercompError:
                if self.annotator(name) is None:  # lost a race with another process: fine if it exists now
                    raise
        elif row.kind != kind:
            raise ItercompError(f"annotator {name} exists as a {row.kind} annotator, not {kind}; pick another name")

    def annotator(self, name: str) -> dict | None:
        with self._transaction(write=False) as conn:
            row = conn.execute(select(annotators).where(annotators.c.name == name)).first()
        return dict(row._mapping) if row else None

    def annotator_names(self) -> list[str]:
        with self._transaction(write=False) as conn:
            return list(conn.execute(select(annotators.c.name).order_by(annotators.c.name)).scalars())

    def check_password(self, name: str, password: str) -> bool:
        user = self.annotator(name) if isinstance(name, str) else None
        return bool(user) and isinstance(password, str) and verify_password(password, user["password_hash"])

    def create_token(self, name: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._transaction(write=True) as conn:
            conn.execute(api_tokens.insert().values(token_sha256=_sha256(token), annotator=name, created_at=now()))
        return token

    def user_for_token(self, token: str) -> str | None:
        with self._transaction(write=False) as conn:
            return conn.execute(
                select(api_tokens.c.annotator).where(api_tokens.c.token_sha256 == _sha256(token))
            ).scalar_one_or_none()

    # ---------------------------------------------------------------- tasks

    def add_tasks(self, specs: Sequence[TaskSpec], round: int = 0) -> tuple[int, int]:
        """Register tasks; returns (added, already present). Loading the same gallery twice changes nothing."""
        added = present = 0
        with self._transaction(write=True) as conn:
            for spec in specs:
                if spec.aspect not in REWARD_ASPECTS:
                    raise ItercompError(f"task aspect must be one of {REWARD_ASPECTS}, got {spec.aspect!r}")
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
                    conn.execute(
                        tasks.insert().values(
                            round=round, prompt_id=spec.prompt_id, aspect=spec.aspect, n_rankings=0, **values
                        )
                    )
                    added += 1
                    continue
                if sorted(c["image_id"] for c in row.candidates) != sorted(spec.candidate_ids):
                    raise ItercompError(
                        f"round {round} already has a task for prompt {spec.prompt_id} ({spec.aspect}) with other "
                        "candidate images; load this gallery with another --round or into a new --db"
                    )
                # Same images: keep the task, but follow the gallery if its folder moved.
                conn.execute(tasks.update().where(tasks.c.id == row.id).values(**values))
                present += 1
        self._task_cache.clear()
        return added, present

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

    # ---------------------------------------------------------------- assignment

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
                    open_key.issued_at,
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
        return Assignment(key, task_id, spec, shown, stamp)

    def issue_key(self, annotator: str, task_id: int, shown_order: list[str] | None = None) -> Assignment:
        """A submission key for a given task (importers and tools that choose their own tasks)."""
        spec = self.task(task_id)
        shown = list(shown_order) if shown_order is not None else spec.candidate_ids
        key, stamp = secrets.token_urlsafe(24), time.time()
        with self._transaction(write=True) as conn:
            conn.execute(
                submission_keys.insert().values(
                    key=key, annotator=annotator, task_id=task_id, shown_order=shown, issued_at=stamp, submitted=False
                )
            )
        return Assignment(key, task_id, spec, shown, stamp)

    # ---------------------------------------------------------------- submissions

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
    ) -> Submitted:
        """Store one ranking under a submission key; raises SubmissionError (nothing written) when it is refused."""
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
                return self._submit_once(annotator, key, order, prompt_id, aspect, seconds_spent, ranks)
            except IntegrityError:
                # Another transaction inserted the same key or task first (possible on servers that do not
                # serialise writers, e.g. PostgreSQL); the second pass sees its row and answers from it.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _submit_once(self, annotator, key, order, prompt_id, aspect, seconds_spent, ranks) -> Submitted:
        with self._transaction(write=True) as conn:
            issued = conn.execute(_key, {"p_key": key}).first()
            if issued is None:
                raise SubmissionError(
                    422, "unknown submission_key: fetch a task with GET /api/tasks/next and submit with its key"
                )
            if issued.annotator != annotator:
                raise SubmissionError(
                    403, "this submission_key was issued to another annotator; fetch your own task first"
                )
            spec = self.task(issued.task_id, conn)
            if prompt_id is not None and prompt_id != spec.prompt_id:
                raise SubmissionError(
                    422, f"prompt_id {prompt_id!r} does not match this submission_key's task ({spec.prompt_id!r})"
                )
            if aspect is not None and aspect != spec.aspect:
                raise SubmissionError(
                    422, f"wrong aspect {aspect!r}: this task is ranked for {spec.aspect!r}; send that aspect"
                )
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

    # ---------------------------------------------------------------- reading

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


# ---------------------------------------------------------------- validation (pure)


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


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
