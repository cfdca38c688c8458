"""Stage configs as dataclasses: a YAML file plus `--field value` command-line overrides, help from field metadata.

Small on purpose (trl's TrlParser does the same through HfArgumentParser but pulls in trl at import time):
YAML keys and flags are the dataclass field names; unknown keys are an error that names them. Every stage
(pretraining, reward training, fine-tuning, the loop) builds its config with these functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path

import yaml

from itercomp.errors import ItercompError


def _parse_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _base(tp):
    """(scalar type, is_sequence, optional) of a field annotation such as `int`, `str | None`, `tuple[str, ...]`."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
        origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


def _converter(scalar):
    if scalar is bool:
        return _parse_bool
    return scalar if scalar in (int, float, str) else str


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        scalar, sequence, _ = _base(hints[f.name])
        kwargs = {"type": _converter(scalar), "default": argparse.SUPPRESS, "help": f.metadata.get("help", "")}
        if sequence:
            kwargs["nargs"] = "+"
        parser.add_argument(f"--{f.name}", **kwargs)


def _coerce(cls, values: dict) -> dict:
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in values.items():
        scalar, sequence, optional = _base(hints[name])
        if value is None and optional:
            out[name] = None
        elif sequence:
            items = value if isinstance(value, (list, tuple)) else [value]
            out[name] = tuple(_converter(scalar)(v) for v in items)
        else:
            out[name] = _converter(scalar)(value)
    return out


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """`--config FILE` plus one `--field value` flag per dataclass field (all optional on the command line)."""
    parser.add_argument("--config", type=Path, help="YAML file of field: value pairs (flags override it)")
    add_arguments(parser, cls)


def config_from_namespace(cls, namespace: argparse.Namespace):
    """Build `cls` from the YAML named by `--config` (if any) updated with the flags that were given."""
    args = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if hasattr(namespace, f.name)}
    values = {}
    config_file = getattr(namespace, "config", None)
    if config_file is not None:
        if not config_file.is_file():
            raise ItercompError(f"config file not found: {config_file}")
        values = yaml.safe_load(config_file.read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ItercompError(f"{config_file}: unknown keys {unknown}; valid keys are {sorted(known)}")
    values.update(args)
    try:
        return cls(**_coerce(cls, values))
    except TypeError as e:
        raise ItercompError(f"incomplete config: {e}; pass it in --config FILE or as --field value") from None


def load_config(cls, argv: list[str] | None = None, description: str | None = None):
    """`--config FILE` (YAML) first, then `--field value` overrides; returns an instance of `cls`."""
    parser = argparse.ArgumentParser(description=description or cls.__doc__)
    add_config_arguments(parser, cls)
    return config_from_namespace(cls, parser.parse_args(argv))


def to_dict(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def save_config(config, path) -> None:
    from itercomp.io import write_text

    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
