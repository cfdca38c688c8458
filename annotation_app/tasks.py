"""Tasks from a gallery run (the guideline annotators read for each aspect: `annotation_app.guidelines`).

A task is one prompt x one aspect: every candidate image of that prompt, to be ranked best to worst for that
aspect. IterComp ranks each prompt only for the category it was written for (`task_aspects="own"`, the default);
`task_aspects="all"` ranks every prompt for each of the three reward aspects.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from itercomp.errors import ItercompError
from itercomp.io import read_jsonl
from itercomp.records import MANIFEST, Candidate, ImageRecord
from itercomp.world.vocab import REWARD_ASPECTS

ASPECT_TITLES = {
    "attribute_binding": "Attribute binding",
    "spatial_relationship": "Spatial relationship",
    "non_spatial_relationship": "Non-spatial relationship",
}

POLICY_HELP = (
    "'own' (default, as IterComp): a prompt is ranked only for the aspect it was written for, and prompts of "
    "other aspects (such as 'complex') are skipped; 'all': every prompt is ranked for each of "
    f"{', '.join(REWARD_ASPECTS)}"
)


@dataclass
class TaskSpec:
    """What a task shows: a prompt, the aspect to judge it for, and the candidate images (gallery order)."""

    prompt_id: str
    prompt: str
    aspect: str
    candidates: list[Candidate]
    prompt_aspect: str = ""  # the aspect the prompt was written for
    gallery_dir: str = ""  # absolute folder that candidate paths are relative to ("" if absolute)
    extra: dict = field(default_factory=dict)

    @property
    def candidate_ids(self) -> list[str]:
        return [c.image_id for c in self.candidates]

    def image_path(self, image_id: str) -> Path:
        """The image's file, which must lie inside the task's gallery folder (ItercompError otherwise)."""
        candidate = next(c for c in self.candidates if c.image_id == image_id)
        if not self.gallery_dir:
            raise ItercompError(f"task {self.prompt_id} has no gallery folder, so its images cannot be served")
        return inside(self.gallery_dir, candidate.path, f"image {image_id}")


def escapes(relative: str) -> bool:
    """Would `relative` point outside the folder it is relative to (an absolute path, or `..` past the top)?"""
    path = PurePath(relative)
    if path.is_absolute() or path.drive or relative.startswith(("/", "\\")):
        return True
    return os.path.normpath(relative).split(os.sep)[0] == ".."


def inside(root: str | Path, relative: str, what: str) -> Path:
    """`root / relative`, refusing paths that leave `root`: the server shows annotators only the images of the
    gallery or import folder, never any other file of the machine."""
    if not isinstance(relative, str) or not relative or escapes(relative):
        raise ItercompError(
            f"{what}: path {relative!r} is outside the images folder {root}; image paths must be relative to that "
            "folder and stay inside it (no absolute paths, no '..'): move the images under the folder, or point "
            "--images-root (imports) or --gallery-run (galleries) at a folder that holds them"
        )
    return Path(root) / relative


def aspects_for(prompt_aspect: str, policy: str = "own") -> tuple[str, ...]:
    if policy == "all":
        return REWARD_ASPECTS
    if policy == "own":
        return (prompt_aspect,) if prompt_aspect in REWARD_ASPECTS else ()
    raise ItercompError(f"unknown task-aspect policy {policy!r}: use 'own' or 'all'")


def load_manifest(run_dir: str | Path) -> list[ImageRecord]:
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not path.is_file():
        raise ItercompError(
            f"no {MANIFEST} in {run_dir}: pass the folder that `itercomp gallery generate --out DIR` wrote"
        )
    return [ImageRecord.from_dict(row) for row in read_jsonl(path)]


def tasks_from_gallery(run_dir: str | Path, policy: str = "own", check_files: bool = True) -> list[TaskSpec]:
    """Group a gallery run's images by prompt; one task per prompt and aspect of the policy."""
    run_dir = Path(run_dir).resolve()
    by_prompt: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in load_manifest(run_dir):
        by_prompt[record.prompt_id].append(record)
    tasks = []
    for prompt_id, images in by_prompt.items():
        seen: set[str] = set()
        for image in images:
            if image.image_id in seen:
                raise ItercompError(f"{run_dir / MANIFEST} lists image {image.image_id} twice; regenerate the manifest")
            seen.add(image.image_id)
            inside(run_dir, image.path, f"image {image.image_id} of {run_dir / MANIFEST}")
            if check_files and not (run_dir / image.path).is_file():
                raise ItercompError(f"image {image.path} of {run_dir / MANIFEST} is missing; re-run the gallery")
        if len(images) < 2:
            continue  # nothing to rank
        images.sort(key=lambda r: (r.generator, r.seed, r.image_id))
        first = images[0]
        for aspect in aspects_for(first.aspect, policy):
            tasks.append(
                TaskSpec(
                    prompt_id=prompt_id,
                    prompt=first.prompt,
                    aspect=aspect,
                    candidates=[Candidate.of(r) for r in images],
                    prompt_aspect=first.aspect,
                    gallery_dir=str(run_dir),
                )
            )
    if not tasks:
        raise ItercompError(
            f"{run_dir / MANIFEST} gives no task to rank: each prompt needs >= 2 images, and with "
            f"--task-aspects own only prompts of {', '.join(REWARD_ASPECTS)} are ranked; try --task-aspects all"
        )
    return tasks


def add_gallery_tasks(store, config) -> tuple[int, int]:
    """Register the tasks of `config.gallery_run` in `store` (idempotent); returns (added, already present)."""
    if config.gallery_run is None:
        return 0, 0
    return store.add_tasks(tasks_from_gallery(config.gallery_run, config.task_aspects), round=config.round)
