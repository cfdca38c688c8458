"""Salted PBKDF2-SHA256 password hashes (standard library only), checked in constant time."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from itercomp.errors import ItercompError

ALGORITHM = "pbkdf2_sha256"
# ~40 ms per check on this machine: slow enough to make guessing expensive, cheap for one login per session.
ITERATIONS = 200_000
# Logins are rate-limited, but a short password still falls to a guesser who spreads attempts over time.
MIN_PASSWORD_LENGTH = 10


def check_password_strength(password: str) -> None:
    """Raise ItercompError saying what to do unless `password` is long enough to set."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ItercompError(
            f"the password must have at least {MIN_PASSWORD_LENGTH} characters (this one has {len(password)}); "
            "a few unrelated words make a long password that is easy to type"
        )


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", _encode(password), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Does `password` match `stored`? A missing or malformed hash costs a full check too (against a decoy), so
    the time of an answer does not tell which annotator names exist."""
    parsed = _parse(stored) if stored else None
    iterations, salt, expected = parsed or _parse(_decoy())
    actual = hashlib.pbkdf2_hmac("sha256", _encode(password), salt, iterations)
    return parsed is not None and hmac.compare_digest(actual, expected)


def _parse(stored: str) -> tuple[int, bytes, bytes] | None:
    try:
        algorithm, iterations, salt, digest = stored.split("$")
        if algorithm != ALGORITHM:
            return None
        return int(iterations), base64.b64decode(salt), base64.b64decode(digest)
    except (ValueError, TypeError):
        return None


def _encode(password: str) -> bytes:
    # JSON can carry lone surrogates ("\ud800"); hash them rather than fail on them.
    return password.encode("utf-8", "surrogatepass")


@functools.cache
def _decoy() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
