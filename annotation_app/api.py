"""The JSON API beside the UI: log in for a token, fetch a task, submit a ranking, read progress, export.

Every endpoint but /api/login needs `Authorization: Bearer <token>`. Refusals are JSON `{"error": message}` with
a 4xx status; the message says what to fix, and nothing is written.
"""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from annotation_app.config import AppConfig
from annotation_app.store import KINDS, Store, SubmissionError
from annotation_app.tasks import GUIDELINES
from itercomp.errors import ItercompError

SUBMISSION_FIELDS = {
    "submission_key": "the key that came with the task (GET /api/tasks/next)",
    "prompt_id": "the task's prompt_id",
    "aspect": "the task's aspect",
    "order": "every candidate image id of the task exactly once, best first",
    "seconds_spent": "optional: seconds the annotator spent on the task",
}
REQUIRED_FIELDS = ("submission_key", "prompt_id", "aspect", "order")
# A token found valid is trusted this long without asking the database again (a password reset revokes tokens).
TOKEN_RECHECK_SECONDS = 30.0


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
    if not isinstance(payload, dict):
        raise SubmissionError(400, f"the body must be a JSON object, got {type(payload).__name__}")
    return payload


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


def api_router(store: Store, config: AppConfig) -> APIRouter:
    router = APIRouter(prefix="/api")

    tokens: dict[str, tuple[str, float]] = {}  # token -> (annotator, checked at)

    def annotator(authorization: str) -> str:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise SubmissionError(
                401, "not logged in: POST /api/login with {username, password} and send the token it returns as "
                "'Authorization: Bearer <token>'",
            )  # fmt: skip
        cached = tokens.get(token)
        if cached and time.monotonic() - cached[1] < TOKEN_RECHECK_SECONDS:
            return cached[0]
        name = store.user_for_token(token)
        if name is None:
            tokens.pop(token, None)
            raise SubmissionError(401, "unknown or revoked token: log in again with POST /api/login")
        tokens[token] = (name, time.monotonic())
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
        ok = await run_in_threadpool(store.check_password, username, password)
        if not ok:
            raise SubmissionError(401, "wrong username or password")
        token = await run_in_threadpool(store.create_token, username)
        return {"token": token, "annotator": username}

    @router.get("/tasks/next")
    async def next_task(request: Request):
        assignment = await as_user(
            request, store.next_task, overlap=config.overlap, round=config.round, lease_seconds=config.lease_seconds
        )
        if assignment is None:
            return {"task": None, "message": "nothing left for you to rank in this round"}
        task = assignment.to_dict()
        task["guideline"] = GUIDELINES[assignment.task.aspect]
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
        )
        return JSONResponse(
            {"ranking_id": result.ranking_id, "replay": result.replay}, status_code=200 if result.replay else 201
        )

    @router.get("/images/{task_id}/{image_id}")
    async def image(request: Request, task_id: int, image_id: str):
        """A candidate image of a task, for clients that draw their own ranking page."""

        def find(_user: str):
            try:
                task = store.task(task_id)
            except ItercompError:
                raise SubmissionError(404, f"no task {task_id}") from None
            if image_id not in task.candidate_ids:
                raise SubmissionError(404, f"task {task_id} has no image {image_id!r}")
            path = task.image_path(image_id)
            if not path.is_file():
                raise SubmissionError(404, f"image {image_id} is missing on the server ({path})")
            return path

        return FileResponse(await as_user(request, find))

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
        round_ = request.query_params.get("round")
        if round_ is not None and not round_.lstrip("-").isdigit():
            raise SubmissionError(422, f"round must be an integer, got {round_!r}")
        stored = await run_in_threadpool(
            store.stored_rankings, round=int(round_) if round_ is not None else None, kinds=kinds
        )
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
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return error_response(error.status, error.message, headers)
