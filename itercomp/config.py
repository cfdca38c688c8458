"""Stage configs as dataclasses: a YAML file plus command-line overrides, help from field metadata.

Small on purpose (trl's TrlParser does the same through HfArgumentParser but pulls in trl at import time).
Every stage (pretraining, reward training, fine-tuning, the loop) builds its config with these functions:

- YAML keys are the dataclass field names; unknown keys are an error that names the valid ones.
- A field whose type is a dataclass is a *section*: a mapping in YAML, `--section.field VALUE` on the command
  line, `section.field=value` in a list of overrides (`parse_overrides`).
- A field typed plain `dict` holds settings of a stage whose config is built later (the loop's `finetune:`);
  its flag takes `FIELD=VALUE` pairs and merges key by key.
- Flags are hyphenated (`--base-member`); the underscore spelling (`--base_member`) is accepted, not shown.
  On/off fields are flags (`--use-lora` / `--no-use-lora`). Help shows each field's default.
- A config class may rename a field and keep the old name for a release:
  `aliases: ClassVar[dict[str, str]] = {"lr": "learning_rate"}`. The old key (in YAML, a flag or an override)
  maps to the new one with a DeprecationWarning; giving both is an error.
- Values are converted to the field's type in one place (`coerce_values`), whether they come from YAML (typed)
  or from flags and overrides (text).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import textwrap
import types
import typing
import warnings
from pathlib import Path

import yaml

from itercomp.errors import ItercompError

NULL_TEXT = ("none", "null", "~")


# ---- command-line flags -----------------------------------------------------------------------------------------


def option_strings(name: str) -> list[str]:
    """`--base-member` and `--base_member` for a field or flag name (one string when they are the same)."""
    name = name.lstrip("-")
    hyphen, underscore = f"--{name.replace('_', '-')}", f"--{name.replace('-', '_')}"
    return [hyphen] if hyphen == underscore else [hyphen, underscore]


def _hidden_twin(option: str, options: list[str]) -> bool:
    return "_" in option and option.replace("_", "-") in options


class HelpFormatter(argparse.HelpFormatter):
    """Help that keeps examples on their own lines: in descriptions and epilogs, indented lines (commands) stay
    as written and the other lines are filled as paragraphs. An option's underscore spelling and its deprecated
    names are accepted but not shown."""

    def _fill_text(self, text, width, indent):
        lines, paragraph = [], []
        for line in [*textwrap.dedent(text).strip("\n").splitlines(), ""]:
            if paragraph and (not line.strip() or line[:1].isspace()):
                lines.append(textwrap.fill(" ".join(paragraph), width, initial_indent=indent, subsequent_indent=indent,
                                           break_on_hyphens=False, break_long_words=False))  # fmt: skip
                paragraph = []
            if line[:1].isspace() or not line.strip():
                lines.append(indent + line if line.strip() else "")
            else:
                paragraph.append(line.strip())
        return "\n".join(lines).rstrip("\n")

    def _split_lines(self, text, width):
        # Flag names (`--no-use-lora`) and paths stay whole.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _format_action_invocation(self, action):
        hidden = getattr(action, "deprecated_names", ())
        shown = [s for s in action.option_strings if not _hidden_twin(s, action.option_strings) and s not in hidden]
        if shown != action.option_strings:
            action = copy.copy(action)
            action.option_strings = shown
        return super()._format_action_invocation(action)


class BooleanFlag(argparse.BooleanOptionalAction):
    """`--flag` / `--no-flag`, with the underscore spellings accepted but left out of the usage line."""

    def format_usage(self):
        hidden = getattr(self, "deprecated_names", ())
        return " | ".join(
            s for s in self.option_strings if not _hidden_twin(s, self.option_strings) and s not in hidden
        )


class _WarnsOnOldNames:
    """Mixed into an action that has `deprecated_names`: using one of them warns."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.deprecated_names:
            new = next(s for s in self.option_strings if s not in self.deprecated_names)
            warnings.warn(f"{option_string} is deprecated, use {new}", DeprecationWarning, stacklevel=1)
        super().__call__(parser, namespace, values, option_string)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the conventions of every itercomp command: each `--long-option` also answers to its
    underscore spelling, and help keeps the line breaks of descriptions."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, deprecated: tuple[str, ...] = (), **kwargs):
        """`deprecated`: old option names still accepted, with a DeprecationWarning, and left out of the help."""
        if names and all(n.startswith("--") for n in names):
            names = tuple(dict.fromkeys(s for n in names for s in option_strings(n)))
        old = tuple(dict.fromkeys(s for n in deprecated for s in option_strings(n)))
        action = super().add_argument(*names, *old, **kwargs)
        if old:
            action.deprecated_names = old
            action.__class__ = type(f"Deprecated{type(action).__name__}", (_WarnsOnOldNames, type(action)), {})
        return action

    def parse_known_args(self, args=None, namespace=None):
        return super().parse_known_args(self._fold_bool_values(args), namespace)

    def _fold_bool_values(self, args):
        """`--cpu true` (the spelling before on/off options became flags) -> `--cpu`; `--cpu false` -> `--no-cpu`."""
        args = sys.argv[1:] if args is None else args
        out, args = [], list(args)
        while args:
            arg = args.pop(0)
            action = self._option_string_actions.get(arg)
            if isinstance(action, BooleanFlag) and not arg.startswith("--no-") and args:
                try:
                    value = parse_bool(args[0])
                except ValueError:
                    value = None
                if value is not None:
                    args.pop(0)
                    arg = arg if value else f"--no-{arg[2:]}"
            out.append(arg)
        return out


# ---- field types ----------------------------------------------------------------------------------------------


def _unwrap(tp):
    """(inner type, kind, optional) of an annotation; kind is 'scalar', 'sequence', 'mapping' or 'section'."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = len(args) < len(typing.get_args(tp)), args[0]
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return typing.get_args(tp)[0], "sequence", optional
    if tp is dict or origin is dict:
        args = typing.get_args(tp)
        return (args[1] if args else None), "mapping", optional
    if dataclasses.is_dataclass(tp):
        return tp, "section", optional
    return tp, "scalar", optional


def _types(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def section_classes(cls) -> dict[str, type]:
    """{field name: dataclass} of the fields of `cls` that are sections."""
    return {name: inner for name, tp in _types(cls).items() for inner, kind, _ in [_unwrap(tp)] if kind == "section"}


def parse_bool(text) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _scalar(tp, value):
    if tp is None or tp is typing.Any or (tp is bool and isinstance(value, bool)):
        return value
    if tp is bool:
        return parse_bool(value)
    if tp is float and isinstance(value, (int, float, str)):
        return float(value)
    if tp is int and isinstance(value, str):
        return int(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        return tp(value)
    return value


def _listed(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _pairs(items) -> dict:
    out = {}
    for item in items:
        for pair in str(item).split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected KEY=VALUE, got {pair!r}")
            out[key.strip()] = value.strip()
    return out


def _value(tp, value, where: str):
    inner, kind, optional = _unwrap(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in NULL_TEXT):
        return None
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{") and kind in ("sequence", "mapping"):
        value = yaml.safe_load(value)
    if kind == "section":
        return value if isinstance(value, inner) else config_from_dict(inner, value, where)
    if kind == "mapping":
        if inner is None:  # a later stage's settings, typed by that stage's config class
            return dict(value) if isinstance(value, dict) else parse_overrides(_listed(value))
        pairs = value if isinstance(value, dict) else _pairs(_listed(value))
        return {k: _scalar(inner, v) for k, v in pairs.items()}
    if kind == "sequence":
        items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        return tuple(_scalar(inner, v.strip() if isinstance(v, str) else v) for v in _listed(items))
    return _scalar(inner, value)


def type_name(hint) -> str:
    """A type as an error message names it: "int", "float or null", "one of 'a', 'b'"."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(origin or hint, "__name__", str(hint).replace("typing.", ""))


# ---- values: aliases, unknown keys, types ---------------------------------------------------------------------


def apply_aliases(cls, values: dict, where: str | None = None) -> dict:
    """`values` with each deprecated key (`cls.aliases`: old -> new) renamed, warning once per key; an error
    when both the old and the new key are given."""
    out = dict(values)
    for old, new in _aliases(cls).items():
        if old not in out:
            continue
        place = f"{where or cls.__name__}: "
        if new in out:
            raise ItercompError(
                f"{place}both {old!r} and {new!r} are set; {old!r} is the deprecated name of {new!r}, keep only {new!r}"
            )
        warnings.warn(f"{place}{old!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=2)
        out[new] = out.pop(old)
    return out


def canonical_values(cls, values: dict, where: str | None = None) -> dict:
    """`values` under the current field names, section by section (old names mapped), so that two sources
    (a YAML file, flags) merge field by field. Unknown keys are an error naming the valid ones."""
    where = where or cls.__name__
    values = apply_aliases(cls, values, where)
    fields = _types(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ItercompError(f"{where}: unknown keys {unknown}; valid keys are {sorted(fields)}")
    sections = section_classes(cls)
    return {
        k: canonical_values(sections[k], v, f"{where}.{k}") if k in sections and isinstance(v, dict) else v
        for k, v in values.items()
    }


def coerce_values(cls, values: dict, where: str | None = None) -> dict:
    """Typed values for some or all fields of `cls` (sections become their dataclass): the one place where
    text from flags and overrides, and YAML's own types, become the field's type."""
    values = canonical_values(cls, values, where)
    fields = _types(cls)
    out = {}
    for name, value in values.items():
        try:
            out[name] = _value(fields[name], value, f"{where or cls.__name__}.{name}")
        except (ValueError, TypeError, yaml.YAMLError):
            tp = type_name(_unwrap(fields[name])[0])
            raise ItercompError(f"{cls.__name__}.{name} must be {tp}, got {value!r}") from None
    return out


def config_from_dict(cls, values: dict, where: str | None = None):
    """An instance of `cls` from YAML-like data (nested mappings for sections, old names allowed)."""
    if not isinstance(values, dict):
        raise ItercompError(f"{where or cls.__name__} must be a mapping of field: value, got {values!r}")
    typed = coerce_values(cls, values, where)
    try:
        return cls(**typed)
    except TypeError as e:
        raise ItercompError(f"incomplete config: {e}; pass it in --config FILE or as --field value") from None


def parse_overrides(items, flag: str = "--set") -> dict:
    """`["max_steps=40", "model.width=64"]` -> `{"max_steps": "40", "model": {"width": "64"}}` (text values,
    typed later by `coerce_values`; `key=` is null)."""
    out: dict = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise ItercompError(f"{flag} takes FIELD=VALUE pairs (e.g. {flag} max_steps=40), got {item!r}")
        *path, last = key.strip().split(".")
        target = out
        for part in path:
            target = target.setdefault(part, {})
        target[last] = value if value else None
    return out


def merge_values(base: dict, overrides: dict) -> dict:
    """Overrides win key by key; mappings on both sides merge (a flag changes one setting of a section)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path) -> dict:
    """A YAML file of field: value pairs, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ItercompError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ItercompError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ItercompError(f"{path} must be a mapping of field: value")
    return values


# ---- dataclass <-> argparse ---------------------------------------------------------------------------------------


def _default_text(f) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return " (required)"
    if isinstance(value, tuple):
        value = " ".join(map(str, value)) if value else "none"
    return f" (default: {value})"


def add_field_arguments(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """One flag per field of `cls` (sections as `--section.field`), each optional: a flag not given leaves the
    YAML's (or the default) value. Deprecated names are accepted as hidden flags."""
    for f in dataclasses.fields(cls):
        inner, kind, _ = _unwrap(_types(cls)[f.name])
        dest = prefix + f.name
        if kind == "section":
            add_field_arguments(parser, inner, prefix=f"{dest}.")
            continue
        text = f.metadata.get("help", "")
        text += "" if "(default" in text else _default_text(f)  # a help that explains its default keeps it
        kwargs = {"dest": dest, "default": argparse.SUPPRESS, "help": text}
        if kind == "scalar" and inner is bool:
            kwargs["action"] = BooleanFlag
        elif kind == "sequence":
            kwargs.update(nargs="+", metavar=f.name.upper())
        elif kind == "mapping":
            kwargs.update(nargs="+", action="extend", metavar="KEY=VALUE")
        else:
            kwargs["metavar"] = f.name.upper()
        parser.add_argument(*option_strings(dest), **kwargs)
    for old, new in _aliases(cls).items():
        inner, kind, _ = _unwrap(_types(cls)[new])
        nargs = {"sequence": "+", "mapping": "+"}.get(kind)
        action = BooleanFlag if kind == "scalar" and inner is bool else None
        kwargs = {"nargs": nargs} if nargs else ({"action": action} if action else {})
        parser.add_argument(
            *option_strings(prefix + old), dest=prefix + old, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
            **kwargs,
        )  # fmt: skip


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """`--config FILE` plus one flag per dataclass field (all optional on the command line)."""
    parser.add_argument("--config", type=Path, help="YAML file of field: value pairs (flags override it)")
    add_field_arguments(parser, cls)


def namespace_values(cls, namespace: argparse.Namespace) -> dict:
    """The fields given as flags, nested by section (`model.width` -> {"model": {"width": ...}}); old names stay
    as given, for `coerce_values` to map. Other attributes of the namespace (a command's own flags) are left."""
    out: dict = {}
    for name, value in vars(namespace).items():
        *path, last = name.split(".")
        owner, target = cls, out
        for part in path:
            owner = section_classes(owner).get(part) if owner is not None else None
            target = target.setdefault(part, {})
        if owner is None:
            continue
        field_types = _types(owner)
        if last in field_types and _unwrap(field_types[last])[:2] == (None, "mapping"):
            value = parse_overrides(value, option_strings(name)[0])
        if last in field_types or last in _aliases(owner):
            target[last] = value
    return out


def _aliases(cls) -> dict:
    return getattr(cls, "aliases", None) or {}


def config_from_namespace(cls, namespace: argparse.Namespace, base: dict | None = None):
    """Build `cls` from `base` (e.g. a saved run's settings), updated with the YAML named by `--config` (if any),
    updated with the flags that were given."""
    values = canonical_values(cls, base or {}, f"saved settings: {cls.__name__}")
    config_file = getattr(namespace, "config", None)
    if config_file is not None:
        values = merge_values(values, canonical_values(cls, read_yaml(config_file), f"{config_file}: {cls.__name__}"))
    return config_from_dict(cls, merge_values(values, canonical_values(cls, namespace_values(cls, namespace))))


def load_config(cls, argv: list[str] | None = None, description: str | None = None):
    """`--config FILE` (YAML) first, then flag overrides; returns an instance of `cls`."""
    parser = ArgumentParser(description=description or cls.__doc__)
    add_config_arguments(parser, cls)
    return config_from_namespace(cls, parser.parse_args(argv))


def to_dict(config) -> dict:
    """Plain YAML/JSON data of a config (sections nested, tuples as lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def save_config(config, path) -> None:
    from itercomp.io import write_text

    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
