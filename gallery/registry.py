"""The registry that maps a gallery YAML's `type` to a Generator class: the built-in members below, any class
registered with `@register("name")`, or a class named by import path ('package.module:Class').

The built-ins are listed here, not registered by their own modules, so the member modules depend on `gallery.base`
only and nothing imports in a circle (none of them imports torch at import time).
"""

from __future__ import annotations

from gallery.base import Generator
from gallery.diffusers_generator import DiffusersGenerator
from gallery.shapes_members import BagOfWords, ColourLeak, LayoutPlanner
from itercomp.errors import ItercompError
from itercomp.plugins import import_class

# Each class names its own YAML `type` (`type_name`).
GENERATORS: dict[str, type[Generator]] = {
    cls.type_name: cls for cls in (DiffusersGenerator, LayoutPlanner, BagOfWords, ColourLeak)
}


def register(type_name: str):
    """Class decorator: make a Generator subclass available to YAML specs as `type: <type_name>`."""

    def wrap(cls: type[Generator]) -> type[Generator]:
        if type_name in GENERATORS and GENERATORS[type_name] is not cls:
            raise ValueError(f"generator type {type_name!r} is registered twice ({GENERATORS[type_name]} and {cls})")
        cls.type_name = type_name
        GENERATORS[type_name] = cls
        return cls

    return wrap


def generator_class(type_name: str) -> type[Generator]:
    """A registered type name, or a plugin class by import path ('package.module:Class' or 'package.module.Class')."""
    if type_name in GENERATORS:
        return GENERATORS[type_name]
    if "." not in type_name and ":" not in type_name:
        raise ItercompError(
            f"unknown generator type {type_name!r}; registered types are {', '.join(sorted(GENERATORS))}, "
            "or give a Generator subclass by import path ('package.module:Class')"
        )
    return import_class(type_name, Generator, "generator type")
