"""Render prompts with a gallery's members: batched, loaded once, resumable, sharded across processes.

Output folder:

    images/<image_id>.png   one image per (prompt, member, seed); image_id = itercomp.records.image_id(...)
    manifest.jsonl          one itercomp.records.ImageRecord per image (path relative to the folder, sha256)
    prompts.jsonl           the prompts (id, prompt, aspect)
    grids/<prompt_id>.png   members x seeds of one prompt, for people to look at
    run.json                what ran: gallery, members' settings, seeds, processes, timings

An image is finished when its file exists: files are written atomically, so a killed run leaves whole images
or none, and the next run renders only what is missing. Each member's missing images are split across
processes (`accelerate launch`), and only the main process writes the manifest, after every process is done.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from gallery.base import Generator
from gallery.spec import Gallery
from itercomp.errors import ItercompError, PromptError
from itercomp.io import atomic_open, read_jsonl, sha256_file, write_json, write_jsonl
from itercomp.prompts import generic_prompt_id, read_prompt_file
from itercomp.records import MANIFEST, ImageRecord, image_id

PNG_METADATA_KEY = "itercomp"  # the member's metadata for an image, as JSON in a PNG text chunk
UNKNOWN_ASPECT = "unknown"


@dataclass(frozen=True)
class Job:
    """One image to render."""

    prompt_id: str
    prompt: str
    aspect: str
    generator: str
    seed: int

    @property
    def image_id(self) -> str:
        return image_id(self.prompt_id, self.generator, self.seed)

    @property
    def path(self) -> str:
        return f"images/{self.image_id}.png"

    def record(self, sha256: str) -> ImageRecord:
        return ImageRecord(
            self.image_id, self.prompt_id, self.prompt, self.aspect, self.generator, self.seed, self.path, sha256
        )


# ---- prompts --------------------------------------------------------------------------------------------------


def prompt_entry(text: str, aspect: str | None = None, pid: str | None = None) -> dict:
    """{id, prompt, aspect}: the id is `itercomp.prompts.generic_prompt_id` (the world's for a shapes-world
    prompt); the aspect is the world's for a shapes-world prompt, else "unknown" unless given."""
    from itercomp.world.rules import WorldRuleError
    from itercomp.world.scene import parse

    text = text.strip()
    try:
        scene = parse(text)
    except WorldRuleError as e:  # the world's words, but no image can show them: refuse before rendering
        raise ItercompError(f"a gallery prompt breaks a rule of the shapes world: {e}") from None
    except PromptError:  # not a shapes-world prompt (e.g. one for a real text-to-image model)
        scene = None
    if not aspect:
        aspect = scene.aspect if scene is not None else UNKNOWN_ASPECT
    return {"id": pid or generic_prompt_id(text), "prompt": text, "aspect": aspect}


def load_prompt_file(path, aspect: str | None = None) -> list[dict]:
    """Prompts from a text file (one per line, as T2I-CompBench ships them) or JSONL (`prompt`, optional `id`,
    `aspect`). `aspect` labels prompts that carry none (e.g. a whole T2I-CompBench category file)."""
    rows = read_prompt_file(path)
    return unique_prompts([prompt_entry(r["prompt"], r.get("aspect") or aspect, r.get("id")) for r in rows])


def world_prompts(aspect: str, split: str, n: int, seed: int = 0) -> list[dict]:
    from itercomp.world.prompts import generate_prompts

    return [prompt_entry(text, aspect) for text in generate_prompts(aspect, split, n, seed=seed)]


def unique_prompts(entries: list[dict]) -> list[dict]:
    seen, out = set(), []
    for entry in entries:
        if entry["id"] not in seen:
            seen.add(entry["id"])
            out.append(entry)
    return out


def seeds_for(images_per_prompt: int, base_seed: int = 0) -> list[int]:
    """The seeds of one prompt's images; every member uses the same ones, so comparisons are paired."""
    if images_per_prompt < 1:
        raise ItercompError(f"--images-per-prompt must be >= 1, got {images_per_prompt}")
    return [base_seed + k for k in range(images_per_prompt)]


def plan(prompts: Sequence[dict], members: Sequence[str], seeds: Sequence[int]) -> list[Job]:
    """Every image of the run, member by member (so each member loads once), prompt by prompt, seed by seed."""
    return [Job(p["id"], p["prompt"], p["aspect"], m, s) for m in members for p in prompts for s in seeds]


# ---- images ---------------------------------------------------------------------------------------------------


def to_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ItercompError(
            f"a generator returned an image of dtype {array.dtype} shape {array.shape}; expected H x W x 3 uint8"
        )
    return array


def encode_png(image, metadata: dict) -> bytes:
    info = PngInfo()
    info.add_text(PNG_METADATA_KEY, json.dumps(metadata, sort_keys=True, default=str))
    buffer = io.BytesIO()
    Image.fromarray(to_array(image)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_metadata(path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text.get(PNG_METADATA_KEY, "{}"))


def write_file(path: Path, data: bytes) -> None:
    """A killed process leaves the whole file or none. No fsync per image (it would cost more than rendering a
    small image); a file cut short by a power loss fails `is_complete` on the next run and is rendered again."""
    with atomic_open(path, "wb", fsync=False) as f:
        f.write(data)


def save_image(path: Path, image, metadata: dict) -> str:
    data = encode_png(image, metadata)
    write_file(path, data)
    return hashlib.sha256(data).hexdigest()


def is_complete(path: Path, trusted: dict[str, str]) -> bool:
    """Is this image finished? Files the manifest lists are trusted; others (from a run killed before it wrote
    the manifest) must decode as a whole PNG."""
    if not path.is_file():
        return False
    if path.name in trusted:
        return True
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:
        return False


# ---- the run --------------------------------------------------------------------------------------------------

MAX_REFUSALS_SHOWN = 3


def check_drawable(generators: Sequence[Generator], jobs: Sequence[Job]) -> None:
    """Raise ItercompError before anything is rendered if a member refuses one of its images' prompts."""
    by_name = {g.name: g for g in generators}
    refused = [(job, why) for job in jobs if (why := by_name[job.generator].refusal(job.prompt, job.seed))]
    if not refused:
        return
    shown = "; ".join(
        f"gallery member {job.generator!r} cannot draw a prompt: {job.prompt!r} (seed {job.seed}): {why}"
        for job, why in refused[:MAX_REFUSALS_SHOWN]
    )
    more = f" (and {len(refused) - MAX_REFUSALS_SHOWN} more)" if len(refused) > MAX_REFUSALS_SHOWN else ""
    refusing = sorted({job.generator for job, _ in refused})
    others = [g.name for g in generators if g.name not in refusing]
    way_out = f", or render only the other members with --members {','.join(others)}" if others else ""
    raise ItercompError(
        f"{shown}{more}. Nothing was rendered: remove the prompts that {', '.join(map(repr, refusing))} "
        f"cannot draw{way_out}"
    )


class _Single:
    """Stands in for an accelerate.Accelerator in a plain single-process run."""

    process_index, num_processes, is_main_process, device = 0, 1, True, None

    def wait_for_everyone(self):
        pass


def _gather(accelerator, value) -> list:
    if accelerator.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def render_gallery(
    gallery: Gallery,
    prompts: Sequence[dict],
    out,
    *,
    members: Sequence[str] | None = None,
    images_per_prompt: int = 1,
    seed: int = 0,
    batch_size: int | None = None,
    skip_unavailable: bool = False,
    grids: bool = True,
    accelerator=None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Render every (prompt, member, seed) image that is not in `out` yet; returns the run summary (run.json)."""
    out = Path(out)
    acc = accelerator or _Single()
    main = acc.is_main_process
    say = log if main else (lambda _: None)
    prompts = unique_prompts(list(prompts))
    if not prompts:
        raise ItercompError("no prompts to render")
    generators, missing = loadable_members(gallery, members, skip_unavailable, say)

    seeds = seeds_for(images_per_prompt, seed)
    jobs = plan(prompts, [g.name for g in generators], seeds)
    # Every process decides what is missing before any process writes, so all agree on the split.
    manifest = out / MANIFEST
    trusted = {Path(r["path"]).name: r["sha256"] for r in read_jsonl(manifest)} if manifest.is_file() else {}
    pending = [j for j in jobs if not is_complete(out / j.path, trusted)]
    check_drawable(generators, pending)  # every process finds the same: all stop, or none
    if main:  # half-written temp files of a killed run; no process writes before the barrier below
        for stale in (out / "images").glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    acc.wait_for_everyone()
    done = len(jobs) - len(pending)
    say(
        f"gallery {gallery.name!r}: {len(generators)} members x {len(prompts)} prompts x {len(seeds)} seeds = "
        f"{len(jobs)} images in {out}"
    )
    if done:
        say(
            f"resuming: {done} of {len(jobs)} images already exist and are skipped; rendering the remaining {len(pending)}"
        )
    if pending and acc.num_processes > 1:
        say(f"splitting {len(pending)} images across {acc.num_processes} processes")

    start = time.perf_counter()
    rendered = render_share(generators, pending, out, acc, batch_size, progress=main and progress)
    seconds = time.perf_counter() - start
    counts = _gather(acc, rendered)
    acc.wait_for_everyone()

    summary = {
        "gallery": gallery.name,
        "gallery_file": gallery.source,
        "members": [g.describe() for g in generators],
        "skipped_members": missing,
        "prompts": len(prompts),
        "seeds": seeds,
        "images": len(jobs),
        "already_there": done,
        "rendered": len(pending),
        "world_size": acc.num_processes,
        "rendered_per_process": counts,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(pending) / seconds, 2) if pending and seconds > 0 else None,
    }
    if main:
        records = write_manifest(out, jobs)
        write_prompts(out, prompts)
        if grids:
            touched = {j.prompt_id for j in pending}
            write_grids(out, prompts, [g.name for g in generators], seeds, touched)
        write_json(out / "run.json", summary)
        say(f"{len(records)} images in {out / MANIFEST} ({len(pending)} rendered now, {done} were there)")
    acc.wait_for_everyone()
    return summary


def loadable_members(
    gallery: Gallery, members: Sequence[str] | None, skip_unavailable: bool, say: Callable[[str], None]
) -> tuple[list[Generator], dict[str, str]]:
    """The selected members' generators that can load here, and {name: why} of those that cannot (an error
    naming them and the fix, unless `skip_unavailable`)."""
    generators: list[Generator] = [spec.build() for spec in gallery.select(list(members) if members else None)]
    missing = {g.name: why for g in generators if (why := g.unavailable())}
    if missing and not skip_unavailable:
        runnable = [g.name for g in generators if g.name not in missing]
        others = f". Render the others with --members {','.join(runnable)} or pass --skip-unavailable"
        raise ItercompError(
            "cannot load gallery member(s) "
            + "; ".join(f"{name!r}: {why}" for name, why in missing.items())
            + (others if runnable else "")
        )
    for name, why in missing.items():
        say(f"skipping member {name!r}: {why}")
    generators = [g for g in generators if g.name not in missing]
    if not generators:
        raise ItercompError("no gallery member can load here; see the messages above")
    return generators, missing


def render_share(
    generators: Sequence[Generator], pending: Sequence[Job], out: Path, acc, batch_size: int | None, progress: bool
) -> int:
    """Render this process's share of the pending images (every `num_processes`-th of each member's), one member
    loaded at a time, in batches; returns how many it rendered."""
    from tqdm import tqdm

    rank, world = acc.process_index, acc.num_processes
    mine = {g.name: [j for j in pending if j.generator == g.name][rank::world] for g in generators}
    rendered = 0
    bar = tqdm(total=sum(map(len, mine.values())), unit="img", desc="gallery", disable=not progress)
    for generator in generators:
        todo = mine[generator.name]
        if not todo:
            continue
        bar.set_postfix_str(f"loading {generator.name}")
        generator.load(acc.device)
        bar.set_postfix_str(generator.name)
        size = batch_size or generator.batch_size
        for k in range(0, len(todo), size):
            batch = todo[k : k + size]
            try:
                results = generator.generate([j.prompt for j in batch], [j.seed for j in batch])
            except PromptError as e:
                raise ItercompError(f"gallery member {generator.name!r} cannot draw a prompt: {e}") from None
            if len(results) != len(batch):
                raise ItercompError(
                    f"member {generator.name!r} returned {len(results)} images for {len(batch)} prompts"
                )
            for job, (image, metadata) in zip(batch, results):
                save_image(out / job.path, image, {"generator": job.generator, "seed": job.seed, **(metadata or {})})
            rendered += len(batch)
            bar.update(len(batch))
        generator.unload()
    bar.close()
    return rendered


def write_manifest(out: Path, jobs: Sequence[Job]) -> list[dict]:
    """Merge this run's images into manifest.jsonl (one record per image id; earlier runs' images are kept)."""
    path = out / MANIFEST
    records = {}
    if path.is_file():
        for row in read_jsonl(path):
            if (out / row["path"]).is_file():
                records[row["image_id"]] = ImageRecord.from_dict(row).to_dict()
    absent = [j.path for j in jobs if not (out / j.path).is_file()]
    if absent:
        raise ItercompError(
            f"{len(absent)} images are missing after rendering (first: {absent[0]}); run again to finish"
        )
    for job in jobs:
        records[job.image_id] = job.record(sha256_file(out / job.path)).to_dict()
    rows = list(records.values())
    write_jsonl(path, rows)
    return rows


def write_prompts(out: Path, prompts: Sequence[dict]) -> None:
    path = out / "prompts.jsonl"
    existing = read_jsonl(path) if path.is_file() else []
    write_jsonl(path, unique_prompts([*existing, *prompts]))


def write_grids(out: Path, prompts, members, seeds, touched: set[str]) -> None:
    """One picture per prompt: a row per member, a column per seed; redrawn when any of its images is new."""
    from itercomp.grid import make_grid

    for prompt in prompts:
        target = out / "grids" / f"{prompt['id']}.png"
        if prompt["id"] not in touched and target.is_file():
            continue
        images, captions = [], []
        for member in members:
            for seed in seeds:
                file = out / "images" / f"{image_id(prompt['id'], member, seed)}.png"
                with Image.open(file) as image:
                    images.append(image.convert("RGB"))
                captions.append(f"{member} s{seed}")
        scale = max(1, 128 // images[0].width)  # small worlds upscaled, real 1024 px images left as they are
        grid = make_grid(images, captions, columns=len(seeds), scale=scale, caption_lines=1, title=prompt["prompt"])
        buffer = io.BytesIO()
        grid.save(buffer, format="PNG")
        write_file(target, buffer.getvalue())
