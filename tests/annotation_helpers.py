"""Shared fixtures for the annotation app's tests: a small gallery and a live server."""

from __future__ import annotations

import json
import threading
import time

import httpx
import uvicorn
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from annotation_app.config import AppConfig
from annotation_app.loadtest import free_port
from annotation_app.server import create_app
from annotation_app.store import Store
from annotation_app.toy_gallery import make_toy_gallery


def tell_tale_gallery(root, prompts_per_aspect: int = 1):
    """A toy gallery whose PNGs carry a text chunk naming the generator and its mistakes, as gallery runs do."""
    records = make_toy_gallery(root, prompts_per_aspect=prompts_per_aspect)
    for record in records:
        info = PngInfo()
        info.add_text("itercomp", json.dumps({"generator": record.generator, "instance_errors": ["drawn as square"]}))
        path = root / record.path
        with Image.open(path) as image:
            image.load()
            image.save(path, pnginfo=info)
    return records


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
