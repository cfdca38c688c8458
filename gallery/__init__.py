"""The model gallery: one `Generator` interface over many text-to-image models, defined by YAML data.

`load_gallery(path_or_name)` reads and validates a gallery YAML; `render_gallery(...)` renders prompts with
its members (batched, resumable, sharded across processes) into a folder with `manifest.jsonl`.
"""

from gallery.base import Context, Generator
from gallery.registry import GENERATORS, generator_class, register
from gallery.run import load_prompt_file, render_gallery, world_prompts
from gallery.spec import Gallery, MemberSpec, load_gallery, parse_gallery

__all__ = [
    "GENERATORS",
    "Context",
    "Gallery",
    "Generator",
    "MemberSpec",
    "generator_class",
    "load_gallery",
    "load_prompt_file",
    "parse_gallery",
    "register",
    "render_gallery",
    "world_prompts",
]
