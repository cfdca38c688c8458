"""The annotation server: FastAPI with the JSON API under /api and the Gradio ranking page mounted at /.

Run one process: Gradio keeps its page state in process memory (several workers would not share it). Logins of
both the API and the page are tokens in the database, so a password reset (`itercomp annotate add-user --reset`,
from any process) or a token's expiry ends them at the next request. The database may be shared with other
processes (simulators, importers, exports) at any time.
"""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from gradio.routes import App as GradioApp
from starlette.routing import Mount

from annotation_app.api import api_router, install_error_handlers
from annotation_app.auth import (
    ClientAddressMiddleware,
    LoginLimiter,
    LoginPageScript,
    PageSessions,
    page_password_check,
)
from annotation_app.config import AppConfig
from annotation_app.store import Store
from annotation_app.tasks import add_gallery_tasks
from annotation_app.ui import CSS, KEYBOARD_JS, build_ui, slot_count
from itercomp.errors import ItercompError


def create_app(config: AppConfig, store: Store | None = None) -> FastAPI:
    store = store or Store(config.db)
    add_gallery_tasks(store, config)
    if not store.task_ids(config.round):
        raise ItercompError(
            f"no tasks to rank in round {config.round} of {store.url}: pass --gallery-run DIR (a folder with "
            "manifest.jsonl) or the --round that holds them"
        )
    app = FastAPI(title="itercomp annotation", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.store = store
    app.state.config = config
    app.add_middleware(ClientAddressMiddleware)
    app.add_middleware(LoginPageScript)
    install_error_handlers(app)
    limiter = LoginLimiter.of(config)  # one count of failed logins for the API and the page
    app.include_router(api_router(store, config, limiter))

    # No static paths: the page shows images as pixels re-encoded per task (annotation_app.images), never the
    # gallery's files, whose names, folders, metadata and manifest name the generators.
    demo = build_ui(store, config, slot_count(store, config.round))
    demo.queue(default_concurrency_limit=None)

    # Declared before Gradio is mounted at /, so that it answers /logout instead of Gradio's own route (which would
    # look for the session among tokens kept in memory).
    @app.get("/logout", include_in_schema=False)
    def logout(request: Request):
        """End this page session and go back to the login form."""
        gradio_app = gradio_app_of(request.app)
        response = RedirectResponse(url="/", status_code=302)
        for cookie in (f"access-token-{gradio_app.cookie_id}", f"access-token-unsecure-{gradio_app.cookie_id}"):
            store.revoke_token(request.cookies.get(cookie, ""))
            response.delete_cookie(key=cookie, path="/")
        return response

    app = gr.mount_gradio_app(
        app,
        demo,
        path="/",
        auth=page_password_check(store, limiter),
        auth_message=(
            "Log in with the name and password your coordinator set up (itercomp annotate add-user). After "
            f"{config.login_failures_per_user} wrong passwords, wait {config.login_window_seconds / 60:g} minutes."
        ),
        footer_links=[],
        css=CSS,
        head=KEYBOARD_JS,
        ssr_mode=False,
    )
    gradio_app_of(app).tokens = PageSessions(store, config.token_seconds)
    return app


def gradio_app_of(app: FastAPI) -> GradioApp:
    """The Gradio application mounted in `app` (it holds the login sessions and the cookie names)."""
    return next(r.app for r in app.routes if isinstance(r, Mount) and isinstance(r.app, GradioApp))


def serve(config: AppConfig, host: str = "127.0.0.1", port: int = 7860, log_level: str = "warning") -> None:
    import sys

    import uvicorn

    # Every request hops between the event loop and a worker thread; with the default 5 ms GIL switch interval
    # each hop can wait up to 5 ms when the CPU is busy, which capped throughput at ~100 requests/s here.
    sys.setswitchinterval(0.001)
    store = Store(config.db)
    app = create_app(config, store)
    progress = store.progress(None, overlap=config.overlap, round=config.round)
    users = store.annotator_names()
    print(
        f"{progress['tasks']} tasks in round {config.round}, "
        f"{progress['towards_target']} of {progress['target']} rankings at overlap {config.overlap}"
    )
    if not [u for u in users if (store.annotator(u) or {}).get("kind") == "human"]:
        print(f"no annotator can log in yet: add one with `itercomp annotate add-user NAME --db {config.db}`")
    print(f"guidelines: {config.guidelines or 'shapes (default)'}")
    print(f"ranking page: http://{host}:{port}/   API: http://{host}:{port}/api/docs")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
