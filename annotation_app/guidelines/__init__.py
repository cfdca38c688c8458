"""The guideline annotators read for each aspect: Markdown text from a YAML (or JSON) file, one entry per aspect.

    attribute_binding: |
      Judge only whether each object carries the attributes the prompt gives it ...
    spatial_relationship: |
      ...
    non_spatial_relationship: |
      ...

Two files ship with the app: `shapes` (the default, written for the shapes world's colours, shapes, fill and
size) and `real_images` (for photographs and illustrations, after IterComp's ranking criteria and
T2I-CompBench's categories). A file must give every aspect its text: an aspect left out would otherwise show the
default's shapes-world text (solid or hollow fill) to annotators ranking photographs, and nobody would notice.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from itercomp.errors import ItercompError
from itercomp.world.vocab import REWARD_ASPECTS

GUIDELINES_DIR = Path(__file__).parent
SHIPPED_GUIDELINES = ("shapes", "real_images")  # files GUIDELINES_DIR/<name>.yaml, usable by name
DEFAULT_GUIDELINES = "shapes"


def guidelines_path(file: str | Path) -> Path:
    """The file `file` names: an existing file, or the name of a shipped one (`shapes`, `real_images`)."""
    path = Path(file)
    if path.is_file():
        return path
    if str(file) in SHIPPED_GUIDELINES:
        return GUIDELINES_DIR / f"{file}.yaml"
    raise ItercompError(
        f"guidelines file not found: {file}; pass a YAML file that maps each of {', '.join(REWARD_ASPECTS)} to its "
        f"guideline (Markdown), or the name of a shipped one: {', '.join(SHIPPED_GUIDELINES)}"
    )


def load_guidelines(file: str | Path | None = None) -> dict[str, str]:
    """Each reward aspect's guideline (Markdown) from `file` (a path or a shipped name), or the shapes world's
    when None. A file that is not a mapping, names an unknown aspect, leaves an aspect out or gives one an empty
    text is refused with an ItercompError that names the file and the fix."""
    if file is None:
        return dict(GUIDELINES)
    path = guidelines_path(file)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except yaml.YAMLError as e:
        raise ItercompError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError:
        raise ItercompError(f"{path} is not UTF-8 text; save the guidelines file as UTF-8") from None
    if not isinstance(values, dict):
        raise ItercompError(
            f"{path} must map each of {', '.join(REWARD_ASPECTS)} to its guideline text (Markdown), "
            f"got {'an empty file' if values is None else type(values).__name__}"
        )
    unknown = [str(key) for key in values if key not in REWARD_ASPECTS]
    if unknown:
        raise ItercompError(
            f"{path}: unknown aspect(s) {', '.join(map(repr, unknown))}; the aspects are {', '.join(REWARD_ASPECTS)}"
        )
    for aspect, text in values.items():
        if not isinstance(text, str):
            raise ItercompError(
                f"{path}: the guideline of {aspect} must be Markdown text, got {type(text).__name__} {text!r:.60}"
            )
        if not text.strip():
            raise ItercompError(f"{path}: the guideline of {aspect} is empty; write the text annotators read for it")
    missing = [aspect for aspect in REWARD_ASPECTS if aspect not in values]
    if missing:
        raise ItercompError(
            f"{path} has no guideline for {', '.join(missing)}; give every aspect its text (copy what fits from "
            f"{GUIDELINES_DIR / 'real_images.yaml'})"
        )
    return {aspect: values[aspect].strip() for aspect in REWARD_ASPECTS}


# The default, read once (load_guidelines(None) hands out copies).
GUIDELINES: dict[str, str] = load_guidelines(DEFAULT_GUIDELINES)
