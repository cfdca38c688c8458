"""Files that are never half-written: everything goes to a temp file in the same folder, then is renamed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from itercomp.errors import ItercompError


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_jsonl(path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_json(path):
    return json.loads(_existing(path).read_text())


def read_jsonl(path) -> list[dict]:
    rows = []
    for number, line in enumerate(_existing(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ItercompError(f"{path}:{number} is not valid JSON ({e.msg}); fix or remove that line") from None
    return rows


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ItercompError(f"file not found: {path}; check the path")
    return path


def png_bytes(image) -> bytes:
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path, image) -> str:
    """Write an image atomically; returns the sha256 of the bytes written (the manifest's content hash)."""
    data = png_bytes(image)
    with atomic_open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
