"""The annotation server: FastAPI with the JSON API under /api and the Gradio ranking page mounted at /.

Run one process: Gradio keeps logins in process memory (several workers would not share them). The database
may be shared with other processes (simulators, importers, exports) at any time.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from annotation_app.api import api_router, install_error_handlers
from annotation_app.config import AppConfig
from annotation_app.store import Store
from annotation_app.tasks import load_gallery
from annotation_app.ui import CSS, KEYBOARD_JS, build_ui, slot_count
from itercomp.errors import ItercompError


def create_app(config: AppConfig, store: Store | None = None) -> FastAPI:
    store = store or Store(config.db)
    load_gallery(store, config)
    if not store.task_ids(config.round):
        raise ItercompError(
            f"no tasks to rank in round {config.round} of {store.url}: pass --gallery-run DIR (a folder with "
            "manifest.jsonl) or the --round that holds them"
        )
    app = FastAPI(title="itercomp annotation", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.store = store
    app.state.config = config
    install_error_handlers(app)
    app.include_router(api_router(store, config))

    galleries = sorted({store.task(t).gallery_dir for t in store.task_ids(config.round)} - {""})
    # Images are served in place, and only to logged-in users.
    gr.set_static_paths([Path(g) for g in galleries])
    demo = build_ui(store, config, slot_count(store, config.round))
    demo.queue(default_concurrency_limit=None)

    async def check_login(username: str, password: str) -> bool:
        # PBKDF2 takes ~40 ms: keep it off the event loop.
        return await run_in_threadpool(store.check_password, username, password)

    return gr.mount_gradio_app(
        app,
        demo,
        path="/",
        auth=check_login,
        auth_message="Log in with the name and password your coordinator set up (itercomp annotate add-user).",
        allowed_paths=galleries,
        footer_links=[],
        css=CSS,
        head=KEYBOARD_JS,
        ssr_mode=False,
    )


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
    print(f"ranking page: http://{host}:{port}/   API: http://{host}:{port}/api/docs")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
