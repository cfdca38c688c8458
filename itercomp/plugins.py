"""Classes named by import path, for plug-ins (gallery member types, evaluators): 'package.module:Class' or
'package.module.Class', checked to be a subclass of what the registry serves."""

from __future__ import annotations

import importlib

from itercomp.errors import ItercompError


def import_class(path: str, base: type, what: str) -> type:
    """The class at `path`, which must subclass `base`; `what` names it in errors ("generator type")."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ItercompError(f"cannot import {what} {path!r}: {e}; check the import path") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ItercompError(f"{path!r} is not a {base.__module__}.{base.__name__} subclass")
    return cls
