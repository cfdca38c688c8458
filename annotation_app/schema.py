"""The annotation database's tables (SQLAlchemy Core), one place for the schema: annotators, login tokens, tasks
and their blind slots, submission keys and rankings.

Unique constraints back the store's rules across processes: one task per round, prompt and aspect; one ranking
per submission key; one ranking per annotator and task. `Store` creates what is missing when it opens a database
(an older database gains the tables added since)."""

from __future__ import annotations

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
)

KINDS = ("human", "simulated", "imported")  # annotators.kind
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
