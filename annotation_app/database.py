"""The annotation database's connection: the engine, transactions and the private database file.

Through SQLAlchemy: SQLite by default (WAL, and every write transaction opened with `BEGIN IMMEDIATE` so that
concurrent writers queue on the busy timeout instead of failing with "database is locked"), PostgreSQL or any
other server by URL. `Database` is the base of the store's parts (annotation_app.store)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from annotation_app.schema import metadata
from itercomp.errors import ItercompError


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


class Database:
    """An open annotation database: its engine and transactions. Thread-safe; several processes may share one.

    `create=False` opens an existing annotation database only (read-only commands such as stats and export):
    a mistyped path is an error rather than a new, empty database."""

    def __init__(self, db: str | Path, *, create: bool = True):
        self.url = database_url(db)
        self.is_sqlite = self.url.startswith("sqlite")
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
