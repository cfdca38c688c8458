"""The model gallery: one `Generator` interface over many text-to-image models, defined by YAML data.

`load_gallery(path_or_name)` reads and validates a gallery YAML; `render_gallery(...)` renders prompts with
its members (batched, resumable, sharded across processes) into a folder with `manifest.jsonl`.
"""

from gallery.base import GENERATORS, Context, Generator, generator_class, register
from gallery.spec import Gallery, MemberSpec, load_gallery, parse_gallery

__all__ = [
    "GENERATORS",
    "Context",
    "Gallery",
    "Generator",
    "MemberSpec",
    "generator_class",
    "load_gallery",
    "parse_gallery",
    "register",
]
