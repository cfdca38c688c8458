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
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
    inspect,
    or_,
    select,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import StaticPool

from annotation_app.passwords import check_password_strength, hash_password, verify_password
from annotation_app.tasks import TaskSpec, inside
from itercomp.errors import ItercompError
from itercomp.records import Candidate, Ranking, now
from itercomp.world.vocab import REWARD_ASPECTS

KINDS = ("human", "simulated", "imported")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
MAX_SECONDS_SPENT = 7 * 24 * 3600.0
# Integers the databases store (64-bit signed); a larger id from a request cannot name a row.
MAX_SQL_INTEGER = 2**63 - 1

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

# API tokens and the ranking page's login sessions alike: a password reset deletes a user's rows, which ends
# both at once, in every server process; a row older than the server's token lifetime no longer logs anyone in.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),  # only the hash is stored
    Column("annotator", String(64), ForeignKey("annotators.name"), nullable=False),
    Column("created_at", String(40), nullable=False),  # ISO 8601 UTC, as itercomp.records.now() writes it
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

# Blind ranking: annotators see each candidate under a random id of its task (a slot), never its image id or
# path, which name the generator. The server maps slots back to image ids; stored rankings hold image ids.
task_slots = Table(
    "task_slots",
    metadata,
    Column("slot_id", String(32), primary_key=True),
    Column("task_id", Integer, ForeignKey("tasks.id"), nullable=False),
    Column("image_id", String(200), nullable=False),
    UniqueConstraint("task_id", "image_id", name="one_slot_per_image"),
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
    """A submission the store refuses; `status` is the HTTP status the API answers with. Nothing was written.

    `headers` go with the API's answer (e.g. Retry-After); `index` says which item of a batch was refused."""

    def __init__(self, status: int, message: str, *, headers: dict | None = None, index: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.index = index


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


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for in-memory SQLite and other databases."""
    if not url.startswith("sqlite"):
        return None
    path = make_url(url).database
    return None if not path or path == ":memory:" or path.startswith("file:") else Path(path)


def create_private_file(path: Path) -> None:
    """Create an empty file that only its owner may read (0600) unless it exists. SQLite creates its -wal and
    -shm files with the database file's permissions, so they are private too."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise ItercompError(f"cannot create the annotation database {path}: its folder does not exist") from None


def iso_seconds_ago(seconds: float) -> str:
    """The time `seconds` ago in the format of itercomp.records.now() (ISO strings of one format sort by time)."""
    return datetime.fromtimestamp(time.time() - seconds, timezone.utc).isoformat(timespec="seconds")


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
    """All reads and writes of the annotation app. Thread-safe; several processes may share one database.

    `create=False` opens an existing annotation database only (read-only commands such as stats and export):
    a mistyped path is an error rather than a new, empty database."""

    def __init__(self, db: str | Path, *, create: bool = True):
        self.url = database_url(db)
        self.is_sqlite = self.url.startswith("sqlite")
        self._task_cache: dict[int, TaskSpec] = {}
        self._slot_cache: dict[int, dict[str, str]] = {}
        self._write_lock = threading.Lock()
        file = sqlite_file(self.url)
        if file is not None and not create and not file.is_file():
            raise ItercompError(
                f"no annotation database at {file}: check --db (a typo?); `itercomp annotate serve`, `simulate` "
                "and `import` create one"
            )
        if file is not None:
            create_private_file(file)  # before SQLite creates it world-readable (umask 022)
        try:
            self.engine = (
                _sqlite_engine(self.url) if self.is_sqlite else create_engine(self.url, pool_size=32, max_overflow=32)
            )
            if create:
                self._create_tables()
            else:
                self._check_tables()
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

    def _check_tables(self) -> None:
        with self.engine.connect() as conn:
            missing = [name for name in metadata.tables if not inspect(conn).has_table(name)]
        if len(missing) == len(metadata.tables):
            raise ItercompError(f"{self.url} holds no annotation data (no itercomp tables): check --db")
        if missing:  # an older database: add what newer versions keep beside it (e.g. task_slots)
            self._create_tables()

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
        _check_annotator(name, kind)
        if kind == "human" and not password:
            raise ItercompError(f"annotator {name} needs a non-empty password")
        if password:
            check_password_strength(password)
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
        for attempt in range(2):
            try:
                with self._transaction(write=True) as conn:
                    self._ensure_annotator(conn, name, kind)
                return
            except IntegrityError:  # another process created it first (servers that let inserts race)
                if attempt:
                    raise

    def _ensure_annotator(self, conn: Connection, name: str, kind: str) -> None:
        """`ensure_annotator` inside the caller's write transaction."""
        _check_annotator(name, kind)
        row = conn.execute(select(annotators.c.kind).where(annotators.c.name == name)).first()
        if row is None:
            conn.execute(
                annotators.insert().values(name=name, kind=kind, password_hash=None, is_admin=False, created_at=now())
            )
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
        """Unknown names and password-less annotators cost the same hash as a real check (see verify_password)."""
        user = self.annotator(name) if isinstance(name, str) and len(name) <= 64 else None
        stored = user["password_hash"] if user else None
        return verify_password(password if isinstance(password, str) else "", stored)

    def create_token(self, name: str, token: str | None = None, *, max_age_seconds: float | None = None) -> str:
        """Store a login token for `name` (a new random one unless given); with `max_age_seconds`, tokens older than
        that (expired) are deleted on the way."""
        token = token or secrets.token_urlsafe(32)
        with self._transaction(write=True) as conn:
            if max_age_seconds is not None:
                conn.execute(api_tokens.delete().where(api_tokens.c.created_at < iso_seconds_ago(max_age_seconds)))
            conn.execute(api_tokens.insert().values(token_sha256=_sha256(token), annotator=name, created_at=now()))
        return token

    def user_for_token(self, token: str, max_age_seconds: float | None = None) -> str | None:
        """Who the token logs in, or None for an unknown, revoked or (older than `max_age_seconds`) expired one."""
        if not isinstance(token, str) or not token:
            return None
        query = select(api_tokens.c.annotator).where(api_tokens.c.token_sha256 == _sha256(token))
        if max_age_seconds is not None:
            query = query.where(api_tokens.c.created_at >= iso_seconds_ago(max_age_seconds))
        with self._transaction(write=False) as conn:
            return conn.execute(query).scalar_one_or_none()

    def revoke_token(self, token: str) -> bool:
        """Log a token out; False if it was not there."""
        if not isinstance(token, str) or not token:
            return False
        with self._transaction(write=True) as conn:
            return conn.execute(api_tokens.delete().where(api_tokens.c.token_sha256 == _sha256(token))).rowcount > 0

    # ---------------------------------------------------------------- tasks

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


def _check_annotator(name: str, kind: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ItercompError(
            f"annotator name {name!r} is not allowed: use 1-64 letters, digits and . _ @ : - (starting with a "
            "letter or digit)"
        )
    if kind not in KINDS:
        raise ItercompError(f"annotator kind must be one of {KINDS}, got {kind!r}")


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
