"""The one interface every gallery member implements, and the registry that maps a YAML `type` to a class.

A member is a name plus a config dataclass (its YAML fields). It is loaded once per run, then asked for
batches: `generate(prompts, seeds)` returns one `(image, metadata)` per prompt, where the image is an
H x W x 3 uint8 array or a PIL image and the same (prompt, seed) always gives the same image, whatever
else is in the batch.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from itercomp.errors import ItercompError

GENERATORS: dict[str, type[Generator]] = {}


@dataclass
class Context:
    """Where a member's spec came from; relative paths in a spec resolve against `root` (the YAML's folder)."""

    member: str
    source: str = "<memory>"
    root: Path | None = None


class Generator(abc.ABC):
    """A gallery member. Subclasses set `Config` (a dataclass of their YAML fields) and implement `generate`."""

    Config: ClassVar[type]
    type_name: ClassVar[str] = ""

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


def register(type_name: str):
    """Class decorator: make a Generator subclass available to YAML specs as `type: <type_name>`."""

    def wrap(cls: type[Generator]) -> type[Generator]:
        if type_name in GENERATORS and GENERATORS[type_name] is not cls:
            raise ValueError(f"generator type {type_name!r} is registered twice ({GENERATORS[type_name]} and {cls})")
        cls.type_name = type_name
        GENERATORS[type_name] = cls
        return cls

    return wrap


def _builtin_types() -> None:
    # Imported for their @register side effect; kept lazy so `import gallery` does not import torch.
    import gallery.diffusers_generator  # noqa: F401
    import gallery.shapes_members  # noqa: F401


def generator_class(type_name: str) -> type[Generator]:
    """A registered type name, or a plugin class by import path ('package.module:Class' or 'package.module.Class')."""
    _builtin_types()
    if type_name in GENERATORS:
        return GENERATORS[type_name]
    if "." not in type_name and ":" not in type_name:
        raise ItercompError(
            f"unknown generator type {type_name!r}; registered types are {', '.join(sorted(GENERATORS))}, "
            "or give a Generator subclass by import path ('package.module:Class')"
        )
    module_name, _, attr = type_name.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ItercompError(f"cannot import generator type {type_name!r}: {e}; check the import path") from None
    if not (isinstance(cls, type) and issubclass(cls, Generator)):
        raise ItercompError(f"{type_name!r} is not a gallery.Generator subclass")
    return cls
