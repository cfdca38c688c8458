"""Rankings files of a run: `Ranking` records as JSON lines with candidate paths relative to the file's folder
(the interchange format the reward-model trainer reads), so a run folder can be moved as a whole."""

from __future__ import annotations

import os
from pathlib import Path

from itercomp.io import read_jsonl, write_jsonl
from itercomp.records import Ranking


def read_rankings(path: str | Path) -> list[Ranking]:
    """The rankings of a rankings.jsonl, candidate paths made absolute."""
    path = Path(path)
    root = path.resolve().parent
    rankings = []
    for row in read_jsonl(path):
        ranking = Ranking.from_dict(row)
        for candidate in ranking.candidates:
            candidate.path = str((root / candidate.path).resolve())
        rankings.append(ranking)
    return rankings


def write_rankings(path: str | Path, rankings: list[Ranking]) -> None:
    path = Path(path)
    root = path.resolve().parent
    rows = []
    for ranking in rankings:
        row = ranking.to_dict()
        for candidate in row["candidates"]:
            candidate["path"] = os.path.relpath(Path(candidate["path"]).resolve(), root)
        rows.append(row)
    write_jsonl(path, rows)
