"""Logins for the API and the ranking page: failed-login limits, the client's address, and page sessions kept in
the store (so a password reset or an expired login ends them at once, as it does API tokens)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field

from annotation_app.store import Store

# The address of the client whose request is being handled, for the page login (Gradio calls the password check
# with the name and password only).
CLIENT_ADDRESS: ContextVar[str] = ContextVar("client_address", default="unknown")


class ClientAddressMiddleware:
    """Pure ASGI middleware: make the client's address readable (CLIENT_ADDRESS) by code that gets no request.
    Behind a reverse proxy every client has the proxy's address, so failed logins are counted per proxy."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = scope.get("client")
        reset = CLIENT_ADDRESS.set(client[0] if client else "unknown")
        try:
            await self.app(scope, receive, send)
        finally:
            CLIENT_ADDRESS.reset(reset)


@dataclass
class Attempt:
    """One login attempt, counted as failed until `LoginLimiter.succeeded` forgives it."""

    keys: tuple[str, str]
    stamp: float


@dataclass
class LoginLimiter:
    """At most `per_user` failed logins per annotator name and `per_address` per client address within
    `window_seconds`; beyond that, logins for the name (or from the address) are refused until the oldest failure
    leaves the window. An attempt counts as failed from the moment it starts, so parallel guesses gain nothing."""

    per_user: int
    per_address: int
    window_seconds: float
    _failures: dict[str, deque] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Names and addresses never seen again are dropped once this many keys are held.
    max_keys: int = 100_000

    @classmethod
    def of(cls, config) -> LoginLimiter:
        """The limits of an AppConfig."""
        return cls(config.login_failures_per_user, config.login_failures_per_address, config.login_window_seconds)

    def begin(self, username: str, address: str) -> Attempt | float:
        """An Attempt to verify, or the seconds to wait when the name or the address is over its limit."""
        now = time.monotonic()
        keys = (f"user:{username[:64]}", f"address:{address}")  # no longer name exists (NAME_PATTERN)
        with self._lock:
            wait = max(self._wait(keys[0], self.per_user, now), self._wait(keys[1], self.per_address, now))
            if wait > 0:
                return wait
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
            if len(self._failures) > self.max_keys:
                self._forget_old(now)
        return Attempt(keys, now)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the attempt is no failure, and the name's earlier failures are forgiven (the
        address's are not, or one known account would reset the count for guesses at others)."""
        with self._lock:
            self._failures.pop(attempt.keys[0], None)
            stamps = self._failures.get(attempt.keys[1])
            if stamps and attempt.stamp in stamps:
                stamps.remove(attempt.stamp)

    def _wait(self, key: str, limit: int, now: float) -> float:
        stamps = self._failures.get(key)
        if not stamps:
            return 0.0
        while stamps and stamps[0] <= now - self.window_seconds:
            stamps.popleft()
        if len(stamps) < limit:
            return 0.0
        return stamps[len(stamps) - limit] + self.window_seconds - now

    def _forget_old(self, now: float) -> None:
        for key in [k for k, stamps in self._failures.items() if not stamps or stamps[-1] <= now - self.window_seconds]:
            del self._failures[key]


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class PageSessions(MutableMapping):
    """Gradio's login sessions (cookie token -> annotator name), stored as tokens in the store instead of in
    process memory: a password reset (which deletes the annotator's tokens) or the token lifetime ends a page
    session at the next request, in every server process. Only hashes are stored, so the sessions cannot be
    listed (`iter` is empty); logging out goes through `del sessions[token]`."""

    def __init__(self, store: Store, max_age_seconds: float):
        self.store = store
        self.max_age_seconds = max_age_seconds

    def __getitem__(self, token: str) -> str:
        user = self.store.user_for_token(token, self.max_age_seconds)
        if user is None:
            raise KeyError(token)
        return user

    def __setitem__(self, token: str, user: str) -> None:
        self.store.create_token(user, token, max_age_seconds=self.max_age_seconds)

    def __delitem__(self, token: str) -> None:
        if not self.store.revoke_token(token):
            raise KeyError(token)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0
