"""Rankings in and out of the store.

Export (`export`): a Hugging Face `datasets.DatasetDict` saved with `save_to_disk` — split `rankings`, one row per
ranking, and split `pairs`, one row per (better, worse) pair with tied candidates skipped — plus `rankings.jsonl`,
one `itercomp.records.Ranking.to_dict()` per line (the interchange file the reward-model trainer reads). Images
are referenced by path, never embedded: absolute paths by default, or relative to the export folder.

Import: IterComp's published JSON (`rank` lists 1-based gallery indices best first; the gallery is the
`image_<model>` keys in file order) and ImageReward's (`generations`: image paths, `ranking`: one rank value per
image, lower is better, ties allowed). Imported rankings go through the store like any other submission.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from annotation_app.store import Store, StoredRanking, SubmissionError
from annotation_app.tasks import TaskSpec, inside
from itercomp.errors import ItercompError
from itercomp.io import sha256_file, write_json, write_jsonl
from itercomp.prompts import generic_prompt_id
from itercomp.rankings import RANKINGS_FILE
from itercomp.records import Candidate, image_id
from itercomp.world.vocab import REWARD_ASPECTS

PATH_MODES = ("absolute", "relative")
FORMATS = ("itercomp", "imagereward")


# ---------------------------------------------------------------- export


def _resolved_path(stored: StoredRanking, candidate: Candidate, out: Path, mode: str) -> str:
    path = Path(candidate.path)
    if not path.is_absolute() and stored.gallery_dir:
        path = Path(stored.gallery_dir) / path
    if mode == "relative":
        return os.path.relpath(path, out.resolve())
    return str(path)


def ranking_line(stored: StoredRanking, out: Path, paths: str = "absolute") -> dict:
    """`Ranking.to_dict()` with candidate paths resolved, plus `ranking_id`, `annotator_kind` and `ranks`
    (one rank per entry of `order`, equal values are ties; null when the order is strict)."""
    data = stored.ranking.to_dict()
    for candidate, row in zip(stored.ranking.candidates, data["candidates"]):
        row["path"] = _resolved_path(stored, candidate, out, paths)
    data.update(ranking_id=stored.id, annotator_kind=stored.annotator_kind, ranks=stored.ranks)
    return data


def _features():
    from datasets import Features, List, Value

    common = {
        "ranking_id": Value("int64"),
        "prompt_id": Value("string"),
        "prompt": Value("string"),
        "aspect": Value("string"),
        "round": Value("int64"),
        "annotator": Value("string"),
        "annotator_kind": Value("string"),
    }
    rankings = Features(
        {
            **common,
            "created_at": Value("string"),
            "seconds_spent": Value("float64"),
            "order": List(Value("string")),
            "ranks": List(Value("int64")),
            "shown_order": List(Value("string")),
            "candidate_ids": List(Value("string")),
            "candidate_generators": List(Value("string")),
            "candidate_seeds": List(Value("int64")),
            "candidate_paths": List(Value("string")),
            "candidate_sha256": List(Value("string")),
        }
    )
    pairs = Features(
        {
            **common,
            "better_id": Value("string"),
            "worse_id": Value("string"),
            "better_generator": Value("string"),
            "worse_generator": Value("string"),
            "better_path": Value("string"),
            "worse_path": Value("string"),
        }
    )
    return rankings, pairs


def export(
    store: Store,
    out: str | Path,
    *,
    round: int | None = None,
    kinds: Sequence[str] | None = None,
    paths: str = "absolute",
) -> dict:
    """Write the DatasetDict (`save_to_disk(out)`), `out/rankings.jsonl` and `out/export.json` (counts)."""
    from datasets import Dataset, DatasetDict

    if paths not in PATH_MODES:
        raise ItercompError(f"--paths must be one of {PATH_MODES}, got {paths!r}")
    out = Path(out)
    stored = store.stored_rankings(round=round, kinds=kinds)
    if not stored:
        raise ItercompError(
            "no rankings to export" + (f" in round {round}" if round is not None else "")
            + "; rank some first (the web app, `itercomp annotate simulate` or `itercomp annotate import`)"
        )  # fmt: skip
    lines = [ranking_line(s, out, paths) for s in stored]
    ranking_rows, pair_rows = [], []
    for s, line in zip(stored, lines):
        r = s.ranking
        common = {
            "ranking_id": s.id,
            "prompt_id": r.prompt_id,
            "prompt": r.prompt,
            "aspect": r.aspect,
            "round": r.round,
            "annotator": r.annotator,
            "annotator_kind": s.annotator_kind,
        }
        path_of = {c["image_id"]: c["path"] for c in line["candidates"]}
        generator_of = {c.image_id: c.generator for c in r.candidates}
        ranking_rows.append(
            {
                **common,
                "created_at": r.created_at,
                "seconds_spent": r.seconds_spent,
                "order": r.order,
                "ranks": s.ranks if s.ranks is not None else list(range(1, len(r.order) + 1)),
                "shown_order": r.shown_order or [],
                "candidate_ids": [c.image_id for c in r.candidates],
                "candidate_generators": [c.generator for c in r.candidates],
                "candidate_seeds": [c.seed for c in r.candidates],
                "candidate_paths": [path_of[c.image_id] for c in r.candidates],
                "candidate_sha256": [c.sha256 for c in r.candidates],
            }
        )
        for better, worse in s.pairs():
            pair_rows.append(
                {
                    **common,
                    "better_id": better,
                    "worse_id": worse,
                    "better_generator": generator_of[better],
                    "worse_generator": generator_of[worse],
                    "better_path": path_of[better],
                    "worse_path": path_of[worse],
                }
            )
    ranking_features, pair_features = _features()
    dataset = DatasetDict(
        {
            "rankings": Dataset.from_list(ranking_rows, features=ranking_features),
            "pairs": Dataset.from_list(pair_rows, features=pair_features),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(out))
    write_jsonl(out / RANKINGS_FILE, lines)
    summary = {
        "rankings": len(ranking_rows),
        "pairs": len(pair_rows),
        "per_aspect": {a: sum(1 for r in ranking_rows if r["aspect"] == a) for a in REWARD_ASPECTS},
        "annotators": sorted({r["annotator"] for r in ranking_rows}),
        "round": round,
        "kinds": list(kinds) if kinds else None,
        "paths": paths,
    }
    write_json(out / "export.json", summary)
    return summary


# ---------------------------------------------------------------- import


@dataclass
class ImportedRanking:
    task: TaskSpec
    order: list[str]
    ranks: list[int] | None  # None: strict order
    source: str  # "file:entry" for messages


def read_entries(path: str | Path) -> list[dict]:
    """A JSON array of objects, one JSON object, or JSON lines."""
    path = Path(path)
    if not path.is_file():
        raise ItercompError(f"file not found: {path}; check the path")
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ItercompError(f"{path}:{number} is neither a JSON file nor JSON lines ({e.msg})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ItercompError(f"{path} must hold JSON objects (an array of them or one per line)")
    return data


def _candidate(generator: str, prompt_id: str, path: str, root: Path, where: str) -> Candidate:
    full = inside(root, path, where)  # the server shows imported images to annotators: nothing outside `root`
    sha = sha256_file(full) if full.is_file() else ""  # images need not be present to import rankings
    return Candidate(image_id(prompt_id, generator, 0), generator, 0, path, sha)


def parse_itercomp(entries: list[dict], aspect: str, root: Path, source: str) -> list[ImportedRanking]:
    """IterComp: `{"prompt": ..., "image_<model>": path, ..., "rank": [4, 3, 5, 2, 1, 6]}`, 1-based, best first."""
    out = []
    for k, entry in enumerate(entries):
        where = f"{source} entry {k}"
        prompt = entry.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ItercompError(f"{where}: no 'prompt' text")
        gallery = [(key[len("image_") :], value) for key, value in entry.items() if key.startswith("image_")]
        if len(gallery) < 2 or not all(isinstance(v, str) for _, v in gallery):
            raise ItercompError(f"{where}: needs >= 2 'image_<model>' keys with image paths, got {len(gallery)}")
        rank = entry.get("rank")
        n = len(gallery)
        if not isinstance(rank, list) or sorted(rank) != list(range(1, n + 1)):
            raise ItercompError(
                f"{where}: 'rank' must list each 1-based gallery index 1..{n} once, best first, got {rank!r}"
            )
        pid = generic_prompt_id(prompt)
        candidates = [_candidate(model, pid, path, root, f"{where} image_{model}") for model, path in gallery]
        task = TaskSpec(pid, prompt, aspect, candidates, prompt_aspect=aspect, gallery_dir=str(root))
        out.append(ImportedRanking(task, [candidates[r - 1].image_id for r in rank], None, where))
    return out


def parse_imagereward(entries: list[dict], aspect: str, root: Path, source: str) -> list[ImportedRanking]:
    """ImageReward: `{"prompt": ..., "generations": [paths], "ranking": [rank per image]}`, lower is better, ties
    allowed (kept as ties: they give no training pair)."""
    out = []
    for k, entry in enumerate(entries):
        where = f"{source} entry {k}"
        prompt = entry.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ItercompError(f"{where}: no 'prompt' text")
        images, ranking = entry.get("generations"), entry.get("ranking")
        if not isinstance(images, list) or len(images) < 2 or not all(isinstance(p, str) for p in images):
            raise ItercompError(f"{where}: 'generations' must list >= 2 image paths")
        if (
            not isinstance(ranking, list)
            or len(ranking) != len(images)
            or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranking)
        ):
            raise ItercompError(
                f"{where}: 'ranking' must give one integer rank per image ({len(images)}), got {ranking!r}"
            )
        pid = str(entry.get("prompt_id") or generic_prompt_id(prompt))
        candidates = [
            _candidate(f"image{i}", pid, path, root, f"{where} generations[{i}]") for i, path in enumerate(images)
        ]
        position = sorted(range(len(images)), key=lambda i: (ranking[i], i))
        dense = {value: d for d, value in enumerate(sorted(set(ranking)), 1)}
        task = TaskSpec(pid, prompt, aspect, candidates, prompt_aspect=aspect, gallery_dir=str(root))
        out.append(
            ImportedRanking(
                task, [candidates[i].image_id for i in position], [dense[ranking[i]] for i in position], where
            )
        )
    return out


def import_file(
    store: Store,
    path: str | Path,
    fmt: str,
    aspect: str,
    *,
    annotator: str | None = None,
    images_root: str | Path | None = None,
    round: int = 0,
) -> dict:
    """Read one file and store its rankings as `annotator` (kind "imported"), all or nothing: a refused file
    writes nothing. Importing again adds nothing. Image paths must stay inside `images_root` (default: the
    file's folder)."""
    if fmt not in FORMATS:
        raise ItercompError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if aspect not in REWARD_ASPECTS:
        raise ItercompError(f"--aspect must be one of {REWARD_ASPECTS}, got {aspect!r}")
    path = Path(path)
    root = Path(images_root).resolve() if images_root else path.resolve().parent
    parse = parse_itercomp if fmt == "itercomp" else parse_imagereward
    parsed = parse(read_entries(path), aspect, root, path.name)
    if not parsed:
        raise ItercompError(f"{path} holds no rankings; nothing was imported")
    seen: dict[str, int] = {}  # prompt id -> index of its task in `specs`
    specs: list[TaskSpec] = []
    for item in parsed:
        index = seen.setdefault(item.task.prompt_id, len(specs))
        if index == len(specs):
            specs.append(item.task)
        elif specs[index].candidate_ids != item.task.candidate_ids:
            first = next(p for p in parsed if p.task is specs[index])
            raise ItercompError(
                f"{item.source} ranks prompt {item.task.prompt!r} again with other images than {first.source}; "
                "split the file or import it into another --round"
            )
    items = [(seen[item.task.prompt_id], item.order, item.ranks) for item in parsed]
    try:
        result = store.import_rankings(annotator or f"{fmt}-import", specs, items, round=round)
    except SubmissionError as e:
        where = parsed[e.index].source if e.index is not None else str(path)
        raise ItercompError(f"{where}: {e.message}; nothing was imported") from None
    except ItercompError as e:
        raise ItercompError(f"{e}; nothing was imported from {path}") from None
    ties = sum(1 for item in parsed if item.ranks is not None and len(set(item.ranks)) < len(item.ranks))
    return {"entries": len(parsed), **result, "with_ties": ties}
