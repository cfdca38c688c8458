"""Files and folders that are never half-written: everything goes to a temp file or folder beside its
destination, then is renamed into place."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from itercomp.errors import ItercompError


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, fsync: bool = True) -> Iterator:
    """Open a temp file beside `path` (named `.<name>.<random>.tmp`) that replaces `path` when the block ends;
    an error removes it. `fsync=False` skips flushing to disk: a killed process still leaves the whole file or
    none, only a power loss may leave a file cut short (for many small files that are checked when read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Write a folder as a whole: yields an empty `<path>.tmp` to fill (a leftover of a killed run is removed
    first); when the block ends it replaces `path` (see `replace_dir`). An error removes it and leaves `path` as
    it was.

        with atomic_dir(out) as tmp:
            pipe.save_pretrained(tmp)
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, path)


def replace_dir(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move the finished folder `source` to `path`, replacing what is there: the old folder is moved aside to
    `<path>.old` first and removed last, so a crash leaves the old folder, the new one or `<path>.old`, never a
    mix of both."""
    source, path = Path(source), Path(path)
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    path.parent.mkdir(parents=True, exist_ok=True)
    source.rename(path)
    shutil.rmtree(old, ignore_errors=True)


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


def weights_digest(tensors: Mapping[str, object]) -> str:
    """A short fingerprint of named tensors (a `state_dict()` or a dict of parameters): equal on every process
    that holds the same weights, so a multi-process run can check that its replicas agree."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
