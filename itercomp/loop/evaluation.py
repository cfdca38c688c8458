"""The loop's evaluation stage, and the evaluator that scores it (itercomp.evaluation, chosen by `evaluator:`).

Each round samples the same test prompts with the same seeds (`itercomp.models.evaluate.sample_pipeline`), frees
the pipeline, and scores the images with the configured evaluator: `shapes` (the oracle, the default),
`t2i_compbench` (BLIP-VQA, a detector, CLIPScore) or `rewards` (a folder of reward models). The same evaluator
ranks for the simulated annotators, so a run on prompt files can be simulated end to end.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from itercomp.errors import ItercompError
from itercomp.io import write_json, write_jsonl
from itercomp.loop.report import eval_image_name

if TYPE_CHECKING:
    from itercomp.loop.run import Run

SCORE_BATCH = 64


def load_evaluator(spec):
    """`build_evaluator` with every evaluator the orchestration knows registered (`rewards` lives in
    reward_models, which itercomp.evaluation may not import)."""
    import reward_models.evaluator  # noqa: F401  (registers "rewards")
    from itercomp.evaluation import build_evaluator

    return build_evaluator(spec)


def check_evaluator(spec: dict, starting_rewards: Path | None) -> None:
    """Build the configured evaluator once before any work (no model is loaded yet), so a misspelt type or
    option fails at once; a `rewards` evaluator without a path needs reward models from round 0 on."""
    spec = dict(spec)
    if spec.get("type") == "rewards" and not spec.get("path"):
        if starting_rewards is None:
            raise ItercompError(
                "evaluator.type=rewards without evaluator.path scores with the round's reward models, and round 0 has "
                "none (reward_init: null); give evaluator.path or reward_init"
            )
        spec["path"] = str(starting_rewards)
    load_evaluator(spec)


def score_images(evaluator, rows: list[dict], images, log=None) -> list[dict]:
    """The rows with the evaluator's score, verdict and details of each image, scored in the evaluator's batches."""
    from tqdm import tqdm

    scored = []
    batch = evaluator.batch_size
    for start in tqdm(
        range(0, len(rows), batch), desc=f"scoring ({evaluator.name})", unit="batch", disable=log is None
    ):
        chunk = rows[start : start + batch]
        results = evaluator.score(
            list(images[start : start + batch]), [r["prompt"] for r in chunk], [r["aspect"] for r in chunk]
        )
        scored += [{**result, **row, "correct": result["correct"], "score": result["score"]}
                   for row, result in zip(chunk, results)]  # fmt: skip
    return scored


def evaluate_model(run: Run, k: int) -> dict:
    """Round k's model on the test prompts (the same prompts and seeds every round), sampled by every process
    (a share each), then scored by the evaluator on the main process; images kept for the grids and for
    `itercomp eval --run`."""
    import gc

    import numpy as np

    from itercomp.loop.processes import gather, on_main
    from itercomp.models.evaluate import sample_pipeline

    config, folder, state = run.config, run.layout.stage(k, "eval"), run.state
    prompts = run.prompts.test
    run.log(
        f"evaluating {run.member(k).name}: {len(prompts)} test prompts x {len(config.eval_seeds)} seed(s) = "
        f"{len(prompts) * len(config.eval_seeds)} images, scored by {config.evaluator.get('type')}"
    )
    pipe = run.load_pipeline(k, state.device)
    rows, images = sample_pipeline(
        pipe, prompts, seeds=config.eval_seeds, batch_size=config.eval_batch_size,
        rank=state.process_index, world=state.num_processes, **run.base.config.call,
    )  # fmt: skip
    del pipe  # the evaluator's models load next
    gc.collect()
    shares = gather(state, (rows, images))

    def score_all() -> dict:  # the shares back in one process's order, then scored
        rows = [r for share, _ in shares for r in share]
        images = [image for _, share in shares for image in share]
        order = sorted(range(len(rows)), key=lambda j: (rows[j]["seed"], rows[j]["index"]))
        rows = [{key: v for key, v in rows[j].items() if key != "index"} for j in order]
        return score_and_save(run, k, folder, rows, np.stack([images[j] for j in order]))

    return on_main(state, score_all)


def score_and_save(run: Run, k: int, folder: Path, rows: list[dict], images) -> dict:
    """The evaluator's scores of round k's test images, written with the images: rows.jsonl, eval.json, images/."""
    from PIL import Image

    from itercomp.evaluation import summarize_rows
    from itercomp.models.evaluate import add_object_stats

    evaluator = run.evaluator(k)
    rows = score_images(evaluator, rows, images, run.log)
    summary = add_object_stats(summarize_rows(rows), rows)
    shutil.rmtree(folder / "images", ignore_errors=True)  # a killed evaluation starts over (it is deterministic)
    (folder / "images").mkdir(parents=True)
    for row, image in zip(rows, images):
        Image.fromarray(image).save(folder / "images" / eval_image_name(row["prompt_id"], row["seed"]))
    write_jsonl(folder / "rows.jsonl", rows)
    write_json(folder / "eval.json", summary)
    result = {
        "model": run.member(k).build().model_path,
        "evaluator": evaluator.spec(),
        "per_aspect": summary,
        "images": len(rows),
    }
    rewards = run.reward_models(k)
    if rewards is not None:  # what the round's reward models think of the same images, beside the evaluator
        result["learned_rewards"] = mean_learned_rewards(rewards, rows, images)
    return result


def mean_learned_rewards(folder: Path, rows: list[dict], images) -> dict[str, float]:
    """Mean normalised reward of each aspect's reward model on the evaluation images (H x W x 3 uint8) of its
    own aspect."""
    import numpy as np
    import torch

    from reward_models.ensemble import RewardEnsemble

    ensemble = RewardEnsemble.from_pretrained(folder).eval()
    means = {}
    for aspect in ensemble.aspects:
        picked = [i for i, row in enumerate(rows) if row["aspect"] == aspect]
        scores = []
        for start in range(0, len(picked), SCORE_BATCH):
            chunk = picked[start : start + SCORE_BATCH]
            batch = torch.from_numpy(np.stack([images[i] for i in chunk])).permute(0, 3, 1, 2).float() / 255
            with torch.no_grad():  # the ensemble as fine-tuning calls it (its aggregate, views, contrast)
                scores.append(ensemble(batch, [rows[i]["prompt"] for i in chunk])[aspect])
        if scores:
            means[aspect] = round(float(torch.cat(scores).mean()), 4)
    return means


def annotator_score_fn(evaluator):
    """The simulated annotators' utility of one image for one aspect: the evaluator's score."""

    def score(image, prompt: str, aspect: str) -> float:
        return float(evaluator.score([image], [prompt], [aspect])[0]["score"])

    return score
