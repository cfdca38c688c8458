"""`rankings.jsonl`, the interchange file of rankings: one `itercomp.records.Ranking.to_dict()` per line.

Path convention: a candidate's `path` is relative to the folder that holds the file, so a folder of images with
its rankings.jsonl moves as a whole. An absolute path (`itercomp annotate export --paths absolute` writes them)
is read as it is. `write_rankings` writes every path relative to the file's folder.

Written by the annotation export, `itercomp rewards make-data` and the loop; read by the reward-model trainer,
Diffusion-DPO's preference pairs and the loop. Simulated annotators rank with `plackett_luce`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from itercomp.errors import ItercompError
from itercomp.io import read_jsonl, write_jsonl
from itercomp.prompts import split_for
from itercomp.records import Candidate, Ranking

RANKINGS_FILE = "rankings.jsonl"


@dataclass
class RankingFile:
    """The rankings of one rankings.jsonl, candidate paths as written, with the folder they are relative to."""

    rankings: list[Ranking]
    root: Path

    @classmethod
    def read(cls, path: str | Path) -> RankingFile:
        """Read a rankings file that must hold at least one ranking (the trainers' input)."""
        path = Path(path)
        rankings = _read(path)
        if not rankings:
            raise ItercompError(
                f"{path} holds no rankings; export some from the annotation app or run 'itercomp rewards make-data'"
            )
        return cls(rankings, path.parent)

    def path_of(self, candidate: Candidate) -> Path:
        return self.root / candidate.path

    def select(self, aspect: str | None = None, split: str | None = None) -> list[Ranking]:
        """The rankings of one aspect and/or one split (splits are by prompt: `itercomp.prompts.split_for`)."""
        return [
            r
            for r in self.rankings
            if (aspect is None or r.aspect == aspect) and (split is None or split_for(r.prompt) == split)
        ]


def read_rankings(path: str | Path) -> list[Ranking]:
    """The rankings of a rankings.jsonl (none for an empty file), candidate paths made absolute."""
    path = Path(path)
    root = path.resolve().parent
    rankings = _read(path)
    for ranking in rankings:
        for candidate in ranking.candidates:
            candidate.path = str((root / candidate.path).resolve())
    return rankings


def write_rankings(path: str | Path, rankings: Sequence[Ranking]) -> Path:
    """Write `rankings` to `path` atomically. An absolute candidate path is written relative to the file's folder;
    a relative one is taken as relative to that folder already and kept. Returns `path`."""
    path = Path(path)
    root = path.resolve().parent
    rows = []
    for ranking in rankings:
        row = ranking.to_dict()
        for candidate in row["candidates"]:
            if Path(candidate["path"]).is_absolute():
                candidate["path"] = os.path.relpath(Path(candidate["path"]).resolve(), root)
        rows.append(row)
    write_jsonl(path, rows)
    return path


def _read(path: Path) -> list[Ranking]:
    return [Ranking.from_dict(row) for row in read_jsonl(path)]


def ranking_pairs(ranking: Ranking) -> list[tuple[int, int]]:
    """(better, worse) candidate positions (indices into ranking.candidates) for every ordered pair; ties give
    none, and neither do two candidates with the same content hash (the same image twice)."""
    position = {c.image_id: i for i, c in enumerate(ranking.candidates)}
    sha = {c.image_id: c.sha256 for c in ranking.candidates}
    return [(position[b], position[w]) for b, w in ranking.pairs() if not (sha[b] and sha[b] == sha[w])]


def plackett_luce(scores: Sequence[float], temperature: float, rng: np.random.Generator) -> list[int]:
    """Indices best first, drawn from the Plackett-Luce model with weights exp(score / temperature): the order of
    score / temperature + Gumbel noise. Temperature 0 ranks exactly by score (ties keep their order) and draws
    nothing from `rng`; a negative one would rank worst first, so it is refused."""
    if not temperature >= 0:  # also refuses NaN
        raise ItercompError(
            f"Plackett-Luce temperature must be >= 0 (0 ranks exactly by score, larger is noisier), got {temperature}"
        )
    scores = np.asarray(scores, dtype=np.float64)
    if temperature == 0:
        return [int(i) for i in np.argsort(-scores, kind="stable")]
    keys = scores / temperature + rng.gumbel(size=len(scores))
    return [int(i) for i in np.argsort(-keys, kind="stable")]
