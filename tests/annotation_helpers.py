"""Shared fixtures for the annotation app's tests: a small gallery and a live server."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn

from annotation_app.config import AppConfig
from annotation_app.loadtest import free_port
from annotation_app.server import create_app
from annotation_app.store import Store


class LiveServer:
    """The real app (API + Gradio UI) under uvicorn in a thread of the test process."""

    def __init__(self, store: Store, config: AppConfig):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(config, store)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
