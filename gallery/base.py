"""The one interface every gallery member implements (the registry of member types is `gallery.registry`).

A member is a name plus a config dataclass (its YAML fields). It is loaded once per run, then asked for
batches: `generate(prompts, seeds)` returns one `(image, metadata)` per prompt, where the image is an
H x W x 3 uint8 array or a PIL image and the same (prompt, seed) always gives the same image, whatever
else is in the batch.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class Context:
    """Where a member's spec came from; relative paths in a spec resolve against `root` (the YAML's folder)."""

    member: str
    source: str = "<memory>"
    root: Path | None = None


class Generator(abc.ABC):
    """A gallery member. Subclasses set `Config` (a dataclass of their YAML fields) and implement `generate`."""

    Config: ClassVar[type]
    type_name: ClassVar[str] = ""  # its YAML `type` (gallery.registry lists the built-ins; `register` sets it)

    def __init__(self, name: str, config, context: Context | None = None):
        self.name = name
        self.config = config
        self.context = context or Context(name)
        self.loaded = False

    @property
    def batch_size(self) -> int:
        return int(getattr(self.config, "batch_size", 1))

    def unavailable(self) -> str | None:
        """Why this member cannot load on this machine (e.g. weights not there), or None if it can."""
        return None

    def refusal(self, prompt: str, seed: int) -> str | None:
        """Why this member cannot draw `prompt` with `seed`, or None if it can. A run asks this for every image
        before it renders any, so a prompt one member refuses stops the run before the others spend minutes on
        it; it must be cheap (no weights). Members that draw any text keep this default."""
        return None

    def load(self, device=None) -> None:
        """Load weights once; `device` is the accelerator's device when the member does not name one."""
        self.loaded = True

    def unload(self) -> None:
        """Free what `load` took, so the next member of the run fits in memory."""
        self.loaded = False

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[tuple[Any, dict]]:
        """One (image, metadata) per prompt; image i depends only on (prompts[i], seeds[i])."""

    def describe(self) -> dict:
        """JSON-safe settings, recorded beside a run's images."""
        from dataclasses import asdict

        return {"name": self.name, "type": self.type_name, **asdict(self.config)}
