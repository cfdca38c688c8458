"""Evaluators by name: `build_evaluator("shapes")` or `build_evaluator({"type": "t2i_compbench", **options})`.

The built-in evaluators are listed here as "module:Class" and imported when built, so importing the registry
imports no torch (the CLI's --help stays cheap). Others register themselves with `@register_evaluator(name)` when
their module is imported: the round's reward models (`rewards`, reward_models/evaluator.py) are registered so, and
the orchestration imports that module before it builds one. A spec's type may also be an import path
('package.module:Class').
"""

from __future__ import annotations

from collections.abc import Mapping

from itercomp.config import config_from_dict
from itercomp.errors import ItercompError
from itercomp.evaluation.base import Evaluator
from itercomp.plugins import import_class

EVALUATORS: dict[str, str | type[Evaluator]] = {
    "shapes": "itercomp.evaluation.shapes:ShapesEvaluator",
    "t2i_compbench": "itercomp.evaluation.t2i_compbench:T2ICompBenchEvaluator",
}


def register_evaluator(name: str):
    """Class decorator: make an Evaluator subclass available as `type: <name>`."""

    def wrap(cls: type[Evaluator]) -> type[Evaluator]:
        known = EVALUATORS.get(name)
        path = f"{cls.__module__}:{cls.__qualname__}"
        if known is not None and known is not cls and known != path:
            raise ValueError(f"evaluator {name!r} is registered twice ({known} and {path})")
        cls.name = name
        EVALUATORS[name] = cls
        return cls

    return wrap


def available_evaluators() -> tuple[str, ...]:
    """The registered names (an evaluator registered by a module not yet imported is not among them)."""
    return tuple(sorted(EVALUATORS))


def evaluator_class(name: str) -> type[Evaluator]:
    """The class of a registered name, or of an import path ('package.module:Class')."""
    target = EVALUATORS.get(name)
    if target is None:
        if ":" not in name:
            raise ItercompError(
                f"unknown evaluator {name!r}; available: {', '.join(available_evaluators())} "
                "(or an Evaluator subclass by import path, 'package.module:Class')"
            )
        target = name
    if isinstance(target, str):
        target = import_class(target, Evaluator, "evaluator")
    return target


def build_evaluator(spec: str | Mapping) -> Evaluator:
    """An evaluator from a name or a mapping {"type": name, **options}; options are the fields of the evaluator's
    config class (unknown keys and bad values are an ItercompError naming them)."""
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("type", None)
        if not isinstance(name, str):
            raise ItercompError(
                f"an evaluator spec needs a 'type' (one of {', '.join(available_evaluators())}), got {dict(spec)!r}"
            )
    else:
        raise ItercompError(f"an evaluator spec is a name or a mapping with 'type', got {spec!r}")
    cls = evaluator_class(name)
    config = config_from_dict(cls.config_class, options, where=f"evaluator {name!r}")
    evaluator = cls(config)
    if not cls.name:  # a plugin given by import path
        evaluator.name = name
    return evaluator
