"""Prompts of any text, the shapes world's or not: their ids, their splits and prompt files.

A shapes-world prompt (one that `itercomp.world.parse` reads) takes the world's id and split, both fixed by its
canonical text, so paraphrases share them. Any other text is keyed by its lower-cased, whitespace-collapsed form
(`text_key`), so "A photo of  a cat" and "a photo of a cat" share an id and a split wherever they come from: a
gallery, an imported ranking file or the loop.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from itercomp.errors import ItercompError, PromptError
from itercomp.io import read_jsonl
from itercomp.world.prompts import bucket_split, split_of
from itercomp.world.scene import prompt_id


def text_key(prompt: str) -> str:
    """The text a prompt outside the shapes world is identified by: lower case, single spaces, no ends."""
    return " ".join(prompt.lower().split())


def generic_prompt_id(prompt: str) -> str:
    """The shapes world's prompt id when the prompt parses, else "p" + the first 10 hex digits of the sha1 of its
    `text_key`."""
    try:
        return prompt_id(prompt)
    except PromptError:
        return "p" + hashlib.sha1(text_key(prompt).encode()).hexdigest()[:10]


def split_for(prompt: str) -> str:
    """The split of a prompt (train, val or test): the shapes world's fixed split when it parses, else the split
    of its `text_key`, through the same bucket table."""
    try:
        return split_of(prompt)
    except PromptError:
        return bucket_split(text_key(prompt))


def read_prompt_file(path: str | Path) -> list[dict]:
    """The rows of a prompt file: a .jsonl file's objects (each with a "prompt" string; "id", "aspect" and any
    other keys kept) or, for any other suffix, one {"prompt": line} per non-empty line, stripped (as
    T2I-CompBench ships its prompts). Refuses a missing file, a row without a prompt and a file without one."""
    path = Path(path)
    if not path.is_file():
        raise ItercompError(f"prompts file not found: {path}; pass a .txt (one prompt per line) or .jsonl file")
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
        for number, row in enumerate(rows, 1):
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ItercompError(f"{path}:{number} has no 'prompt' string; each line needs {{\"prompt\": ...}}")
    else:
        rows = [{"prompt": line.strip()} for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ItercompError(f"{path} holds no prompts; write one prompt per line (or one JSON object per line)")
    return rows
