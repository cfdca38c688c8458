"""Gallery expansion: a new model renders every ranked prompt, and its images are inserted into each ranking by
the reward models (the insertion rule: itercomp.loop.insertion). The loop's last stage of a round, and
`itercomp expand` by hand.

Each image is scored once per aspect and kept in `<out>/scores.json`, so a resumed expansion scores only what is
missing; the rendering resumes like any gallery run. Under several processes the rendering is split across them
and the scoring and insertion run on the main process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from gallery import Gallery, MemberSpec, render_gallery
from gallery.run import prompt_entry, unique_prompts
from itercomp.io import read_json, read_jsonl, write_json
from itercomp.loop.evaluation import SCORE_BATCH
from itercomp.loop.insertion import insert_candidates
from itercomp.loop.processes import SingleProcess, on_main
from itercomp.rankings import read_rankings, write_rankings
from itercomp.records import MANIFEST, Candidate, ImageRecord


def expand(
    member: MemberSpec,
    rankings_file: Path,
    rewards: Path,
    out: Path,
    *,
    images_per_prompt: int = 1,
    seed: int = 0,
    annotator: str = "reward_model:",
    round: int = 0,
    state=None,
    log: Callable[[str], None] = print,
) -> dict:
    """Render every prompt of `rankings_file` with `member` into `out/gallery`, insert those images into each
    ranking with the reward models in `rewards/<aspect>/` and write `out/rankings.jsonl` (each grown ranking's
    annotator is `<annotator>/<aspect>`, its round `round`); returns where the new images landed per aspect."""
    state = state or SingleProcess()
    rankings = read_rankings(rankings_file)
    prompts = unique_prompts([prompt_entry(r.prompt, pid=r.prompt_id) for r in rankings])
    render_gallery(
        Gallery(member.name, [member]), prompts, out / "gallery", images_per_prompt=images_per_prompt, seed=seed,
        accelerator=state, log=log,
    )  # fmt: skip
    return on_main(state, lambda: insert_new_images(rankings, out, rewards, annotator, round))


def insert_new_images(rankings, out: Path, rewards: Path, annotator: str, round: int) -> dict:
    """Score the new images and every old candidate with the reward models, insert the new ones, write them."""
    new: dict[str, list[Candidate]] = defaultdict(list)
    for row in read_jsonl(out / "gallery" / MANIFEST):
        record = ImageRecord.from_dict(row)
        candidate = Candidate.of(record)
        candidate.path = str((out / "gallery" / record.path).resolve())
        new[record.prompt_id].append(candidate)
    scores = reward_scores(rewards, [(r, new[r.prompt_id]) for r in rankings], out / "scores.json")
    grown = [
        insert_candidates(r, new[r.prompt_id], scores[r.aspect], annotator=f"{annotator}/{r.aspect}", round=round)
        for r in rankings
    ]
    write_rankings(out / "rankings.jsonl", grown)
    return insertion_summary(grown, {c.image_id for cs in new.values() for c in cs})


def reward_scores(rewards: Path, rankings_with_new, cache_path: Path) -> dict[str, dict[str, float]]:
    """{aspect: {image_id: raw reward}} for every candidate, old and new, of every ranking: each image scored once
    per aspect, kept in `cache_path` and never recomputed (a resumed stage scores only what is missing)."""
    import torch
    from tqdm import tqdm

    from reward_models.data import load_image
    from reward_models.model import RewardModel
    from reward_models.preprocess import resize_center_crop

    cache = read_json(cache_path) if cache_path.is_file() else {}
    wanted: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for ranking, new in rankings_with_new:
        for candidate in [*ranking.candidates, *new]:
            wanted[ranking.aspect][candidate.image_id] = (candidate.path, ranking.prompt)
    for aspect, images in wanted.items():
        scores = cache.setdefault(aspect, {})
        todo = [(image_id, path, prompt) for image_id, (path, prompt) in images.items() if image_id not in scores]
        if not todo:
            continue
        model = RewardModel.from_pretrained(rewards / aspect).eval()
        size = model.config.image_size
        for start in tqdm(range(0, len(todo), SCORE_BATCH), desc=f"reward scores {aspect}", unit="batch"):
            batch = todo[start : start + SCORE_BATCH]
            pixels = torch.cat([resize_center_crop(load_image(Path(path))[None], size) for _, path, _ in batch])
            with torch.no_grad():
                values = model.score(pixels, [prompt for _, _, prompt in batch], normalize=False)
            scores.update({image_id: float(v) for (image_id, _, _), v in zip(batch, values.tolist())})
        write_json(cache_path, cache)  # after each aspect: a killed stage keeps what it scored
    return cache


def insertion_summary(grown, new_ids: set[str]) -> dict:
    """Per aspect: where the new model's images landed (0 = top of the ranking, 1 = bottom)."""
    per_aspect: dict[str, dict] = {}
    for ranking in grown:
        stats = per_aspect.setdefault(ranking.aspect, {"rankings": 0, "inserted": 0, "top": 0, "bottom": 0, "pos": []})
        stats["rankings"] += 1
        last = len(ranking.order) - 1
        for position, image_id in enumerate(ranking.order):
            if image_id in new_ids:
                stats["inserted"] += 1
                stats["top"] += position == 0
                stats["bottom"] += position == last
                stats["pos"].append(position / last if last else 0.0)
    for stats in per_aspect.values():
        positions = stats.pop("pos")
        stats["mean_relative_position"] = sum(positions) / len(positions) if positions else None
    return {"rankings": len(grown), "per_aspect": per_aspect}
