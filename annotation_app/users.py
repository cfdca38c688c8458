"""Users and their login tokens: human annotators with a password, password-less simulated and imported ones, and
the tokens of the API and of the ranking page's sessions (only their hashes are stored)."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from annotation_app.database import Database
from annotation_app.passwords import check_password_strength, hash_password, verify_password
from annotation_app.schema import KINDS, annotators, api_tokens
from itercomp.errors import ItercompError
from itercomp.records import now

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")


def iso_seconds_ago(seconds: float) -> str:
    """The time `seconds` ago in the format of itercomp.records.now() (ISO strings of one format sort by time)."""
    return datetime.fromtimestamp(time.time() - seconds, timezone.utc).isoformat(timespec="seconds")


class UserStore(Database):
    """Users and login tokens (a part of annotation_app.store.Store)."""

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
