"""A gallery is data: a YAML file naming its members, each with a `type` and that type's config fields.

    name: shapes
    description: ...
    members:
      - name: layout_planner          # letters, digits, '_' and '.'; becomes part of every image id
        type: layout_planner          # a registered type, or a Generator subclass by import path
        description: ...              # optional, free text (shown by `itercomp gallery list`)
        strengths: [...]              # optional, free text
        weaknesses: [...]             # optional, free text
        shape_confusion: 0.05         # every other field goes to the type's Config dataclass

Loading validates everything that can be checked without weights: unknown or missing fields, field types, the
type's own checks (dtype names, scheduler classes, call arguments against the pipeline's signature). Every
error names the file, the member and the field.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import yaml

from gallery.base import Context, Generator
from gallery.registry import generator_class
from itercomp.config import type_name
from itercomp.errors import ItercompError

BUILTIN_DIR = Path(__file__).resolve().parent
DEFAULT_GALLERY = "shapes"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.]+$")
_MEMBER_KEYS = ("name", "type", "description", "strengths", "weaknesses")
_GALLERY_KEYS = ("name", "description", "members")


@dataclass
class MemberSpec:
    name: str
    type: str
    config: object
    description: str = ""
    strengths: list[str] = field(default_factory=list)
    weaknesses: list[str] = field(default_factory=list)
    context: Context | None = None

    def build(self) -> Generator:
        return generator_class(self.type)(self.name, self.config, self.context)


@dataclass
class Gallery:
    name: str
    members: list[MemberSpec]
    description: str = ""
    source: str = "<memory>"

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def select(self, names: list[str] | None) -> list[MemberSpec]:
        """The members named (in the order given), or all of them; unknown names are an error."""
        if not names:
            return list(self.members)
        by_name = {m.name: m for m in self.members}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ItercompError(
                f"--members names {', '.join(unknown)}, not in gallery {self.name!r} ({self.source}); "
                f"its members are {', '.join(self.names)}"
            )
        return [by_name[n] for n in dict.fromkeys(names)]


def resolve_gallery_path(value: str | Path) -> Path:
    """A YAML path, or the name of a gallery shipped in this package (`shapes`, `itercomp_paper`)."""
    path = Path(value)
    if path.is_file():
        return path
    builtin = BUILTIN_DIR / f"{value}.yaml"
    if builtin.is_file():
        return builtin
    shipped = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
    raise ItercompError(f"gallery not found: {value}; pass a YAML file or one of the shipped galleries {shipped}")


def load_gallery(value: str | Path = DEFAULT_GALLERY) -> Gallery:
    path = resolve_gallery_path(value)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ItercompError(f"{path} is not valid YAML: {e}") from None
    return parse_gallery(data, source=str(path), root=path.parent)


def parse_gallery(data, source: str = "<memory>", root: Path | None = None) -> Gallery:
    if not isinstance(data, dict):
        raise ItercompError(f"{source}: a gallery is a mapping with 'name' and 'members', got {type(data).__name__}")
    unknown = sorted(set(data) - set(_GALLERY_KEYS))
    if unknown:
        raise ItercompError(f"{source}: unknown top-level field {unknown[0]!r}; allowed: {', '.join(_GALLERY_KEYS)}")
    members = data.get("members")
    if not isinstance(members, list) or not members:
        raise ItercompError(f"{source}: 'members' must be a non-empty list of members")
    specs, seen = [], set()
    for index, entry in enumerate(members):
        spec = parse_member(entry, index, source, root)
        if spec.name in seen:
            raise ItercompError(f"{source}: member name {spec.name!r} is used twice; names must be unique")
        seen.add(spec.name)
        specs.append(spec)
    name = data.get("name") or Path(source).stem
    return Gallery(str(name), specs, str(data.get("description") or ""), source)


def parse_member(entry, index: int, source: str, root: Path | None) -> MemberSpec:
    where = f"{source}: member #{index + 1}"
    if not isinstance(entry, dict):
        raise ItercompError(f"{where} must be a mapping with 'name' and 'type', got {entry!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ItercompError(
            f"{where}: field 'name' must be letters, digits, '_' or '.' (it goes into image ids), got {name!r}"
        )
    where = f"{source}: member {name!r}"
    kind = entry.get("type")
    if not isinstance(kind, str):
        raise ItercompError(f"{where}: field 'type' is missing; give a registered generator type or an import path")
    try:
        cls = generator_class(kind)
    except ItercompError as e:
        raise ItercompError(f"{where}: field 'type': {e}") from None
    for key in ("strengths", "weaknesses"):
        value = entry.get(key, [])
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ItercompError(f"{where}: field {key!r} must be a list of strings")
    params = {k: v for k, v in entry.items() if k not in _MEMBER_KEYS}
    context = Context(name, source, root)
    config = build_config(cls, params, where, context)
    return MemberSpec(
        name,
        kind,
        config,
        str(entry.get("description") or "").strip(),
        list(entry.get("strengths", [])),
        list(entry.get("weaknesses", [])),
        context,
    )


def build_config(cls: type[Generator], params: dict, where: str, context: Context):
    """The type's Config from YAML fields: unknown, missing and mistyped fields are errors naming the field."""
    config_cls = cls.Config
    known = {f.name: f for f in fields(config_cls)}
    for key in params:
        if key not in known:
            raise ItercompError(
                f"{where}: unknown field {key!r} for type {cls.type_name or cls.__name__}; "
                f"its fields are {', '.join(list(_MEMBER_KEYS) + list(known))}"
            )
    missing = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING and n not in params]
    if missing:
        raise ItercompError(f"{where}: field {missing[0]!r} is required for type {cls.type_name or cls.__name__}")
    hints = typing.get_type_hints(config_cls)
    for key, value in params.items():
        if not _matches(value, hints[key]):
            raise ItercompError(f"{where}: field {key!r} must be {type_name(hints[key])}, got {value!r}")
    try:
        config = config_cls(**params)
        check = getattr(cls, "validate", None)
        if check is not None:
            check(config, context)
    except (ValueError, TypeError) as e:
        raise ItercompError(f"{where}: {e}") from None
    return config


def _matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is typing.Any:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True
