"""Logins for the API and the ranking page: failed-login limits, the client's address, and page sessions kept in
the store (so a password reset or an expired login ends them at once, as it does API tokens)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

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


def too_many_logins(seconds: float) -> str:
    """What a login refused by the failed-login limit is told, whatever its password: why, and when to retry."""
    wait = max(1, math.ceil(seconds))
    when = f"{wait} s" if wait < 120 else f"{math.ceil(wait / 60)} minutes"
    return f"too many failed logins for this name or from this address: try again in {when}"


def page_password_check(store: Store, limiter: LoginLimiter) -> Callable[[str, str], Awaitable[bool]]:
    """The ranking page's password check (Gradio's `auth`), counted by the same limiter as the API's logins. A login
    over the limit is refused without looking at the password, with HTTP 429 saying when to retry (Gradio's form
    would say "Incorrect credentials." to a user with the right password; LOGIN_LIMIT_JS shows this answer)."""

    async def check(username: str, password: str) -> bool:
        attempt = limiter.begin(username, CLIENT_ADDRESS.get())
        if not isinstance(attempt, Attempt):
            raise HTTPException(
                status_code=429,
                detail=too_many_logins(attempt).capitalize() + ".",
                headers={"Retry-After": retry_after(attempt)},
            )
        # PBKDF2 takes ~40 ms: keep it off the event loop.
        ok = await run_in_threadpool(store.check_password, username, password)
        if ok:
            limiter.succeeded(attempt)
        return ok

    return check


# Gradio's login form shows one fixed text for a 400 answer and nothing for any other refusal, and its login page
# takes no script of the app's; this one (added to the page by LoginPageScript) shows the server's answer to a
# login refused by the failed-login limit (429): too many attempts, and when to retry.
LOGIN_LIMIT_JS = """<script>
(() => {
  const send = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const response = await send(input, init);
    const url = new URL(typeof input === "string" || input instanceof URL ? String(input) : input.url, location.href);
    if (response.status === 429 && /\/login\/?$/.test(url.pathname)) {
      let text = "Too many failed logins: try again later.";
      try { text = (await response.clone().json()).detail || text; } catch (error) {}
      let note = document.getElementById("login-limit");
      if (!note) {
        note = document.createElement("div");
        note.id = "login-limit";
        note.setAttribute("role", "alert");
        note.style.cssText = "position:fixed;top:1em;left:50%;transform:translateX(-50%);z-index:1000;" +
          "padding:.6em 1em;border-radius:6px;background:#fee2e2;color:#991b1b;max-width:90vw";
        document.body.appendChild(note);
      }
      note.textContent = text;
    }
    return response;
  };
})();
</script>"""


class LoginPageScript:
    """Pure ASGI middleware: add LOGIN_LIMIT_JS to the head of the page served at `/` (the login form, or the
    ranking page once logged in)."""

    def __init__(self, app, script: str = LOGIN_LIMIT_JS):
        self.app = app
        self.script = script.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != "/":
            return await self.app(scope, receive, send)
        start: dict = {}
        body: list[bytes] = []

        async def add_script(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            data = b"".join(body)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            if any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                data = data.replace(b"</head>", self.script + b"</head>", 1)
            await send({**start, "headers": [*headers, (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})

        await self.app(scope, receive, add_script)


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
