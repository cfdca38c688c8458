"""The JSON API beside the UI: log in for a token, fetch a task, submit a ranking, read progress, export, log out.

Every endpoint but /api/login needs `Authorization: Bearer <token>`. Refusals are JSON `{"error": message}` with
a 4xx status; the message says what to fix, and nothing is written. Ranking is blind: a task's candidates come
with random per-task ids and image URLs that do not name the generator, and images are served without metadata.
"""

from __future__ import annotations

import json
import logging
import sys

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from annotation_app.auth import Attempt, LoginLimiter, retry_after, too_many_logins
from annotation_app.config import AppConfig
from annotation_app.images import served_png
from annotation_app.store import KINDS, MAX_SQL_INTEGER, Store, SubmissionError
from itercomp.errors import ItercompError

log = logging.getLogger(__name__)

SUBMISSION_FIELDS = {
    "submission_key": "the key that came with the task (GET /api/tasks/next)",
    "prompt_id": "the task's prompt_id",
    "aspect": "the task's aspect",
    "order": "every candidate image id of the task exactly once, best first",
    "seconds_spent": "optional: seconds the annotator spent on the task",
}
REQUIRED_FIELDS = ("submission_key", "prompt_id", "aspect", "order")
# A ranking is two levels deep ({"order": [...]}); nothing a client needs to send comes near this.
MAX_JSON_DEPTH = 16


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_json_object(request: Request, max_bytes: int) -> dict:
    """The request body as a JSON object, or SubmissionError(400/413/415) saying what is wrong with it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise SubmissionError(413, f"payload of {declared} bytes is over the limit of {max_bytes} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise SubmissionError(413, f"payload is over the limit of {max_bytes} bytes")
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type:
        raise SubmissionError(415, f"send the body as application/json, not {content_type}")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SubmissionError(400, f"malformed JSON body: {e}") from None
    except RecursionError:
        raise SubmissionError(400, f"the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError:  # Python refuses to read an integer of more than sys.get_int_max_str_digits() digits
        raise SubmissionError(
            400, f"the JSON body holds a number too long to read (over {sys.get_int_max_str_digits()} digits)"
        ) from None
    if not isinstance(payload, dict):
        raise SubmissionError(400, f"the body must be a JSON object, got {type(payload).__name__}")
    if json_depth(payload) > MAX_JSON_DEPTH:
        raise SubmissionError(400, f"the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    return payload


def json_depth(value) -> int:
    """How deeply lists and objects nest in `value` (1 for a flat object), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def integer_parameter(value: str | None, name: str) -> int | None:
    """A query parameter that must be an integer the database can hold; SubmissionError(422) otherwise."""
    if value is None:
        return None
    text = value.strip()
    if not text.lstrip("-").isdigit() or len(text) > 19 or abs(int(text)) > MAX_SQL_INTEGER:
        raise SubmissionError(422, f"{name} must be an integer of at most 18 digits, got {value[:40]!r}")
    return int(text)


def check_submission_fields(payload: dict) -> None:
    unknown = sorted(set(payload) - set(SUBMISSION_FIELDS))
    if unknown:
        allowed = "; ".join(f"{k}: {v}" for k, v in SUBMISSION_FIELDS.items())
        raise SubmissionError(422, f"unknown field(s) {', '.join(unknown)}; a ranking has {allowed}")
    missing = [k for k in REQUIRED_FIELDS if k not in payload]
    if missing:
        raise SubmissionError(
            422,
            f"missing field(s) {', '.join(missing)}: " + "; ".join(f"{k} is {SUBMISSION_FIELDS[k]}" for k in missing),
        )
    for name in ("submission_key", "prompt_id", "aspect"):
        if not isinstance(payload[name], str):
            raise SubmissionError(422, f"{name} must be a string, got {payload[name]!r}")


def api_router(store: Store, config: AppConfig, limiter: LoginLimiter | None = None) -> APIRouter:
    """The API's routes; `limiter` counts failed logins (share one with the page's login form)."""
    router = APIRouter(prefix="/api")
    limiter = limiter or LoginLimiter.of(config)

    def bearer_token(authorization: str) -> str:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise SubmissionError(
                401, "not logged in: POST /api/login with {username, password} and send the token it returns as "
                "'Authorization: Bearer <token>'",
            )  # fmt: skip
        return token

    def annotator(authorization: str) -> str:
        # Asked on every request (an indexed read): a password reset, a logout or the token's expiry takes
        # effect at once, also when another process (`itercomp annotate add-user --reset`) made it.
        name = store.user_for_token(bearer_token(authorization), config.token_seconds)
        if name is None:
            raise SubmissionError(
                401,
                f"unknown, expired (tokens last {config.token_hours:g} h) or revoked token: log in again with "
                "POST /api/login",
            )
        return name

    async def as_user(request: Request, fn, *args, **kwargs):
        """Authenticate and run `fn(user, ...)` in one trip to the thread pool (each trip costs a GIL hand-off)."""
        authorization = request.headers.get("authorization", "")

        def work():
            return fn(annotator(authorization), *args, **kwargs)

        return await run_in_threadpool(work)

    @router.post("/login")
    async def login(request: Request):
        payload = await read_json_object(request, config.max_body_bytes)
        username, password = payload.get("username"), payload.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise SubmissionError(422, 'send {"username": ..., "password": ...} as strings')
        attempt = limiter.begin(username, request.client.host if request.client else "unknown")
        if not isinstance(attempt, Attempt):
            raise SubmissionError(429, too_many_logins(attempt), headers={"Retry-After": retry_after(attempt)})
        ok = await run_in_threadpool(store.check_password, username, password)
        if not ok:
            raise SubmissionError(401, "wrong username or password")
        limiter.succeeded(attempt)
        token = await run_in_threadpool(store.create_token, username, max_age_seconds=config.token_seconds)
        return {"token": token, "annotator": username, "expires_in": round(config.token_seconds)}

    @router.post("/logout")
    async def logout(request: Request):
        """End this token's session (other tokens of the annotator stay valid)."""
        authorization = request.headers.get("authorization", "")

        def work():
            annotator(authorization)
            store.revoke_token(bearer_token(authorization))

        await run_in_threadpool(work)
        return {"logged_out": True}

    @router.get("/tasks/next")
    async def next_task(request: Request):
        assignment = await as_user(
            request, store.next_task, overlap=config.overlap, round=config.round, lease_seconds=config.lease_seconds
        )
        if assignment is None:
            return {"task": None, "message": "nothing left for you to rank in this round"}
        task = assignment.to_dict()
        task["guideline"] = config.guideline_texts[assignment.task.aspect]
        return {"task": task}

    @router.post("/rankings")
    async def submit(request: Request):
        if not request.headers.get("authorization"):
            annotator("")  # refuse before reading the body
        payload = await read_json_object(request, config.max_body_bytes)
        check_submission_fields(payload)
        result = await as_user(
            request,
            store.submit,
            payload["submission_key"],
            payload["order"],
            prompt_id=payload["prompt_id"],
            aspect=payload["aspect"],
            seconds_spent=payload.get("seconds_spent"),
            blind=True,  # the order names the ids the task was served with
        )
        return JSONResponse(
            {"ranking_id": result.ranking_id, "replay": result.replay}, status_code=200 if result.replay else 201
        )

    @router.get("/images/{task_id}/{slot_id}")
    async def image(request: Request, task_id: str, slot_id: str):
        """A candidate image of a task by the id the task was served with, as PNG without metadata."""

        def find(_user: str) -> bytes:
            number = int(task_id) if task_id.isdigit() and len(task_id) <= 19 else 0
            image_id = store.image_for_slot(number, slot_id)
            if image_id is None:
                raise SubmissionError(404, f"task {task_id[:40]} has no image {slot_id[:40]!r}")
            try:
                path = store.task(number).image_path(image_id)
                if not path.is_file():
                    raise ItercompError(f"image file {path} is missing")
                return served_png(path)
            except ItercompError as e:
                log.warning("not serving image %s of task %s: %s", image_id, number, e)  # the path names the member
                raise SubmissionError(
                    404, f"image {slot_id!r} of task {number} is not available on the server"
                ) from None

        png = await as_user(request, find)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @router.get("/progress")
    async def progress(request: Request):
        return await as_user(request, store.progress, overlap=config.overlap, round=config.round)

    @router.get("/export")
    async def export(request: Request):
        """Every stored ranking as JSON lines (`Ranking.to_dict()` plus id, annotator_kind and ties); admins only."""
        info = await as_user(request, lambda user: store.annotator(user))
        if not info or not info["is_admin"]:
            raise SubmissionError(403, "export is for admins: `itercomp annotate add-user NAME --admin`")
        kinds = request.query_params.get("kinds")
        kinds = kinds.split(",") if kinds else None
        if kinds and set(kinds) - set(KINDS):
            raise SubmissionError(422, f"kinds must be a comma-separated subset of {', '.join(KINDS)}")
        round_ = integer_parameter(request.query_params.get("round"), "round")
        stored = await run_in_threadpool(store.stored_rankings, round=round_, kinds=kinds)
        lines = (
            json.dumps(
                {**s.ranking.to_dict(), "ranking_id": s.id, "annotator_kind": s.annotator_kind, "ranks": s.ranks}
            )
            + "\n"
            for s in stored
        )
        return StreamingResponse(lines, media_type="application/x-ndjson")

    return router


def install_error_handlers(app) -> None:
    @app.exception_handler(SubmissionError)
    async def _refused(_request: Request, error: SubmissionError):
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
        return error_response(error.status, error.message, {**headers, **(error.headers or {})})
