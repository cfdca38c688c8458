"""Where a run keeps what (docs/design.md §5), and the `done.json` marker that makes each stage resumable.

    <out>/config.yaml                  the resolved IterateConfig
    <out>/round_0/eval/                the base model's evaluation (before any fine-tuning)
    <out>/round_<k>/gallery/           round k's prompts rendered by the gallery (manifest.jsonl, images/, grids/)
    <out>/round_<k>/rankings/          the annotation store, export/ (HF dataset + rankings.jsonl) and
                                       rankings.jsonl: every ranking the reward models train on in round k
    <out>/round_<k>/rewards/<aspect>/  the refined reward models
    <out>/round_<k>/model/pipeline/    the fine-tuned base model (FeedbackConfig.output_dir = model/)
    <out>/round_<k>/eval/              oracle evaluation on the test split (eval.json, rows.jsonl, images/)
    <out>/round_<k>/expand/            the fine-tuned model's images of every ranked prompt (gallery/), their
                                       reward scores (scores.json, the cache) and the grown rankings
                                       (rankings.jsonl, round k + 1's starting data)
    <out>/report.json, scores.png, grids/<aspect>.png

A stage is finished when its folder holds `done.json` (written atomically, last); a stage without it runs again
and continues from whatever its own outputs allow (rendered images, stored rankings, trained aspects,
fine-tuning checkpoints, cached scores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from itercomp.io import write_json
from itercomp.records import now

STAGES = ("gallery", "rankings", "rewards", "model", "eval", "expand")
DONE = "done.json"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def plot(self) -> Path:
        return self.root / "scores.png"

    @property
    def grids(self) -> Path:
        return self.root / "grids"

    @property
    def shared_db(self) -> Path:
        """Human mode's store, shared by every round so that annotators' logins carry over."""
        return self.root / "annotations.sqlite"

    def round_dir(self, k: int) -> Path:
        return self.root / f"round_{k}"

    def stage(self, k: int, name: str) -> Path:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages are {STAGES}")
        return self.round_dir(k) / name

    def pipeline(self, k: int) -> Path:
        """The fine-tuned pipeline of round k (k >= 1)."""
        return self.stage(k, "model") / "pipeline"


def is_done(folder: Path) -> bool:
    return (folder / DONE).is_file()


def read_done(folder: Path) -> dict | None:
    path = folder / DONE
    return json.loads(path.read_text()) if path.is_file() else None


def mark_done(folder: Path, summary: dict, seconds: float) -> dict:
    record = {"finished_at": now(), "seconds": round(seconds, 2), "summary": summary}
    write_json(folder / DONE, record)
    return record
