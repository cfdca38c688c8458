"""`rankings.jsonl` as core data (`itercomp.rankings`): the path convention, pairs, and Plackett-Luce sampling."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from itercomp.errors import ItercompError
from itercomp.prompts import split_for
from itercomp.rankings import RankingFile, plackett_luce, ranking_pairs, read_rankings, write_rankings
from itercomp.records import Candidate, Ranking


def _ranking(shas, paths=None, prompt="a red circle and a blue square"):
    paths = paths or [f"{k}.png" for k in range(len(shas))]
    cands = [Candidate(f"i{k}", "g", k, path, sha) for k, (sha, path) in enumerate(zip(shas, paths))]
    return Ranking("p1", prompt, "attribute_binding", cands, ["i2", "i0", "i1"], "simulated")


def test_pairs_every_ordered_pair_and_skip_ties():
    assert ranking_pairs(_ranking(["a", "b", "c"])) == [(2, 0), (2, 1), (0, 1)]
    assert ranking_pairs(_ranking(["a", "a", "c"])) == [(2, 0), (2, 1)]  # i0 and i1 are the same image


def test_candidate_paths_are_relative_to_the_files_folder(tmp_path):
    images = tmp_path / "images"
    absolute = [str(images / f"{k}.png") for k in range(3)]
    path = write_rankings(tmp_path / "data" / "rankings.jsonl", [_ranking(["a", "b", "c"], absolute)])
    row = json.loads(path.read_text())
    assert [c["path"] for c in row["candidates"]] == ["../images/0.png", "../images/1.png", "../images/2.png"]
    # Read back absolute wherever the folder is, and as written (with the folder they are relative to).
    assert [c.path for c in read_rankings(path)[0].candidates] == [str(images.resolve() / f"{k}.png") for k in range(3)]
    data = RankingFile.read(path)
    assert data.path_of(data.rankings[0].candidates[0]).resolve() == (images / "0.png").resolve()
    # A relative path is already relative to the file's folder: kept; an absolute one on disk is read as it is.
    write_rankings(tmp_path / "rankings.jsonl", [_ranking(["a", "b", "c"], ["x/0.png", "x/1.png", absolute[2]])])
    rows = [c.path for c in read_rankings(tmp_path / "rankings.jsonl")[0].candidates]
    assert rows == [str(tmp_path.resolve() / "x" / f"{k}.png") for k in range(2)] + [str(images.resolve() / "2.png")]


def test_a_ranking_file_refuses_to_be_empty_and_selects_by_aspect_and_split(tmp_path):
    (tmp_path / "rankings.jsonl").write_text("")
    assert read_rankings(tmp_path / "rankings.jsonl") == []
    with pytest.raises(ItercompError, match="holds no rankings"):
        RankingFile.read(tmp_path / "rankings.jsonl")
    prompts = [f"a photo of {k} dogs" for k in range(40)]
    write_rankings(tmp_path / "rankings.jsonl", [_ranking(["a", "b", "c"], prompt=p) for p in prompts])
    data = RankingFile.read(tmp_path / "rankings.jsonl")
    assert [r.prompt for r in data.select("attribute_binding", "val")] == [p for p in prompts if split_for(p) == "val"]
    assert data.select("spatial_relationship") == []


def test_plackett_luce_temperature():
    rng = np.random.default_rng(0)
    scores = [0.2, 0.9, 0.5, 0.85]
    assert plackett_luce(scores, 0, rng) == [1, 3, 2, 0]
    cold = Counter(tuple(plackett_luce(scores, 0.01, rng)) for _ in range(200))
    assert cold[(1, 3, 2, 0)] >= 190
    # Close scores get swapped more often than distant ones at a moderate temperature.
    samples = [plackett_luce(scores, 0.1, rng) for _ in range(2000)]
    swapped_close = np.mean([s.index(3) < s.index(1) for s in samples])
    swapped_far = np.mean([s.index(0) < s.index(1) for s in samples])
    assert 0.2 < swapped_close < 0.5 and swapped_far < 0.01
    hot = Counter(plackett_luce(scores, 1e6, rng)[0] for _ in range(4000))
    assert all(800 < hot[i] < 1200 for i in range(4))  # uniform


@pytest.mark.parametrize("temperature", [-0.05, -1e6, math.nan])
def test_plackett_luce_refuses_a_negative_temperature(temperature):
    # A negative temperature would rank worst first (one copy did; the other ranked exactly by score).
    with pytest.raises(ItercompError, match="temperature must be >= 0"):
        plackett_luce([0.2, 0.9], temperature, np.random.default_rng(0))


def test_plackett_luce_at_zero_temperature_draws_nothing():
    rng = np.random.default_rng(3)
    assert plackett_luce([0.5, 0.5, 0.7], 0, rng) == [2, 0, 1]  # ties keep their order
    assert rng.random() == np.random.default_rng(3).random()
