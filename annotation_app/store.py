"""The annotation store: users, tasks, submission keys and rankings in one SQL database.

One class, `Store`, made of one part per concern, each in its own module:

- annotation_app.schema: the tables (and the unique constraints that back the rules below);
- annotation_app.database: the engine, transactions (`BEGIN IMMEDIATE` on SQLite, WAL) and the 0600 database file;
- annotation_app.users: users and login tokens;
- annotation_app.assignment: tasks, blind slots and which task an annotator gets next;
- annotation_app.submissions: idempotent submissions, imports and reading rankings;
- annotation_app.validation: what a submission is refused for.

The names callers use are importable from here."""

from __future__ import annotations

from annotation_app.assignment import Assignment, TaskStore
from annotation_app.database import Database, create_private_file, database_url, sqlite_file
from annotation_app.schema import (
    KINDS,
    MAX_SQL_INTEGER,
    annotators,
    api_tokens,
    metadata,
    rankings,
    submission_keys,
    task_slots,
    tasks,
)
from annotation_app.submissions import MAX_SECONDS_SPENT, RankingStore, StoredRanking, Submitted
from annotation_app.users import NAME_PATTERN, UserStore, iso_seconds_ago
from annotation_app.validation import SubmissionError, check_order, check_ranks


class Store(RankingStore, TaskStore, UserStore):
    """All reads and writes of the annotation app. Thread-safe; several processes may share one database.

    `create=False` opens an existing annotation database only (read-only commands such as stats and export):
    a mistyped path is an error rather than a new, empty database."""


__all__ = [
    "KINDS",
    "MAX_SECONDS_SPENT",
    "MAX_SQL_INTEGER",
    "NAME_PATTERN",
    "Assignment",
    "Database",
    "RankingStore",
    "Store",
    "StoredRanking",
    "SubmissionError",
    "Submitted",
    "TaskStore",
    "UserStore",
    "annotators",
    "api_tokens",
    "check_order",
    "check_ranks",
    "create_private_file",
    "database_url",
    "iso_seconds_ago",
    "metadata",
    "rankings",
    "sqlite_file",
    "submission_keys",
    "task_slots",
    "tasks",
]
