"""Agreement statistics, simulated annotators, export to `datasets` + rankings.jsonl, importers, and the CLI."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from itertools import combinations

import pytest

from annotation_app.agreement import agreement, pairwise_tau
from annotation_app.interchange import export, import_file
from annotation_app.simulate import SimulationConfig, simulate
from annotation_app.store import Store
from annotation_app.tasks import tasks_from_gallery
from annotation_app.toy_gallery import make_toy_gallery
from itercomp.cli import main
from itercomp.errors import ItercompError
from itercomp.records import Ranking


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    make_toy_gallery(root, prompts_per_aspect=4)
    return root


@pytest.fixture
def store(tmp_path, gallery):
    s = Store(tmp_path / "db.sqlite")
    s.add_tasks(tasks_from_gallery(gallery))
    return s


def test_simulate_then_agreement(store):
    result = simulate(store, SimulationConfig(annotators=5, overlap=3, temperature=0.05, seed=1), progress=False)
    n_tasks = len(store.task_ids(0))
    assert result["total"] == 3 * n_tasks and result["progress"]["tasks_complete"] == n_tasks
    stored = store.stored_rankings()
    assert {s.annotator_kind for s in stored} == {"simulated"}
    assert {s.ranking.annotator for s in stored} <= {f"sim-{i}" for i in range(1, 6)}
    # The oracle's signal comes through: the faithful render wins far more often than the noisy or edited ones.
    winners = Counter(s.ranking.order[0].split("-s")[0].rsplit("-", 1)[-1] for s in stored)
    assert winners["faithful"] > 0.5 * len(stored)
    report = agreement(stored)
    assert set(report) == {"attribute_binding", "spatial_relationship", "non_spatial_relationship"}
    for aspect in report.values():
        assert aspect["rankings"] == 3 * 4 and aspect["tasks_with_2_or_more"] == 4
        assert 0.2 < aspect["kendall_tau_mean"] <= 1.0
        assert 0.2 < aspect["krippendorff_alpha"] <= 1.0
        assert aspect["kendall_tau_pairs"]
    # Running it again adds nothing: every task already has its rankings.
    assert simulate(store, SimulationConfig(annotators=5, overlap=3, seed=1), progress=False)["total"] == 0


def test_agreement_extremes(store):
    for name in ("a", "b", "c"):
        store.ensure_annotator(name, "simulated")
    for task_id in store.task_ids(0):
        ids = store.task(task_id).candidate_ids
        for name, order in (("a", ids), ("b", ids), ("c", ids[::-1])):
            store.submit(name, store.issue_key(name, task_id).key, order)
    report = agreement(store.stored_rankings())
    for aspect in report.values():
        pairs = {tuple(p["annotators"]): p["tau"] for p in aspect["kendall_tau_pairs"]}
        assert pairs[("a", "b")] == pytest.approx(1.0) and pairs[("a", "c")] == pytest.approx(-1.0)
        assert aspect["kendall_tau_mean"] == pytest.approx(-1 / 3)
        assert aspect["krippendorff_alpha"] < 0.2
    assert math.isnan(pairwise_tau([1, 1], [1, 2]))


def test_export_dataset_and_rankings_jsonl(store, tmp_path):
    from datasets import load_from_disk

    simulate(store, SimulationConfig(annotators=2, overlap=2, seed=0), progress=False)
    out = tmp_path / "export"
    summary = export(store, out)
    dataset = load_from_disk(str(out))
    assert set(dataset) == {"rankings", "pairs"}
    assert len(dataset["rankings"]) == summary["rankings"] == store.count_rankings()
    assert len(dataset["pairs"]) == summary["pairs"] == sum(math.comb(len(r), 2) for r in dataset["rankings"]["order"])
    row = dataset["rankings"][0]
    assert row["annotator_kind"] == "simulated" and len(row["candidate_paths"]) == 4
    pair = dataset["pairs"][0]
    assert pair["better_id"] in row["order"] or True
    from pathlib import Path

    assert Path(pair["better_path"]).is_file()
    lines = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    rankings = [Ranking.from_dict(line) for line in lines]
    assert len(rankings) == len(dataset["rankings"])
    assert all(Path(c.path).is_file() for r in rankings for c in r.candidates)
    assert sum(len(r.pairs()) for r in rankings) == len(dataset["pairs"])
    # Relative paths resolve from the export folder; filtering by kind can leave nothing to export.
    export(store, tmp_path / "rel", paths="relative")
    line = json.loads((tmp_path / "rel" / "rankings.jsonl").read_text().splitlines()[0])
    assert (tmp_path / "rel" / line["candidates"][0]["path"]).resolve().is_file()
    with pytest.raises(ItercompError, match="no rankings to export"):
        export(store, tmp_path / "none", kinds=["human"])


def test_import_itercomp_format(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("sd15", "sdxl", "flux"):
        (images / f"{name}.png").write_bytes(b"fake")
    entries = [
        {"prompt": "a cat on a mat", "image_sd15": "imgs/sd15.png", "image_sdxl": "imgs/sdxl.png",
         "image_flux": "imgs/flux.png", "rank": [3, 1, 2]},
        {"prompt": "a red circle and a blue square", "image_sd15": "imgs/sd15.png", "image_sdxl": "imgs/sdxl.png",
         "rank": [2, 1]},
    ]  # fmt: skip
    path = tmp_path / "attribute.json"
    path.write_text(json.dumps(entries))
    store = Store(tmp_path / "db.sqlite")
    result = import_file(store, path, "itercomp", "attribute_binding")
    assert result == {"entries": 2, "added": 2, "already_there": 0, "tasks_added": 2, "with_ties": 0}
    first = next(s for s in store.stored_rankings() if s.ranking.prompt == "a cat on a mat")
    # rank [3, 1, 2]: the 3rd gallery image (flux) is best, then sd15, then sdxl.
    assert [c.split("-")[1] for c in first.ranking.order] == ["flux", "sd15", "sdxl"]
    assert first.annotator_kind == "imported" and first.ranking.annotator == "itercomp-import"
    assert first.ranking.candidates[0].sha256  # the image was there, so it was hashed
    assert import_file(store, path, "itercomp", "attribute_binding")["added"] == 0  # idempotent
    path.write_text(json.dumps([{**entries[0], "rank": [1, 1, 2]}]))
    with pytest.raises(ItercompError, match="entry 0: 'rank' must list each 1-based gallery index"):
        import_file(Store(tmp_path / "other.sqlite"), path, "itercomp", "attribute_binding")


def test_import_imagereward_format_with_ties(tmp_path):
    entries = [
        {"prompt": "a dog", "generations": ["a.webp", "b.webp", "c.webp", "d.webp"], "ranking": [2, 1, 2, 3]},
        {"prompt": "a house", "generations": ["e.webp", "f.webp"], "ranking": [1, 2]},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    store = Store(tmp_path / "db.sqlite")
    result = import_file(store, path, "imagereward", "spatial_relationship", annotator="imagereward-train")
    assert result["added"] == 2 and result["with_ties"] == 1
    dog = next(s for s in store.stored_rankings() if s.ranking.prompt == "a dog")
    assert [c.rsplit("-", 2)[1] for c in dog.ranking.order] == ["image1", "image0", "image2", "image3"]
    assert dog.ranks == [1, 2, 2, 3]
    pairs = dog.pairs()
    assert len(pairs) == 5  # C(4,2) = 6 minus the one tie
    tied = {dog.ranking.order[1], dog.ranking.order[2]}
    assert all({a, b} != tied for a, b in pairs)
    out = export(store, tmp_path / "export")
    assert out["pairs"] == 5 + 1
    line = json.loads((tmp_path / "export" / "rankings.jsonl").read_text().splitlines()[0])
    assert line["ranks"] == [1, 2, 2, 3]
    assert all((a, b) in pairs for a, b in combinations(dog.ranking.order, 2) if {a, b} != tied)


def test_cli_add_user_stats_simulate_export(tmp_path, gallery, capsys, monkeypatch):
    db = str(tmp_path / "cli.sqlite")
    pw = tmp_path / "pw.txt"
    pw.write_text("hunter2-hunter2\n")
    assert main(["annotate", "add-user", "ann", "--db", db, "--password-file", str(pw)]) == 0
    assert Store(db).check_password("ann", "hunter2-hunter2")
    monkeypatch.setenv("ITERCOMP_PASSWORD", "from-the-env")
    assert main(["annotate", "add-user", "ann", "--db", db, "--reset"]) == 0
    assert Store(db).check_password("ann", "from-the-env")
    assert main(["annotate", "simulate", "--db", db, "--gallery-run", str(gallery), "--annotators", "3"]) == 0
    assert main(["annotate", "stats", "--db", db, "--json", str(tmp_path / "stats.json")]) == 0
    out = capsys.readouterr().out
    assert "attribute_binding" in out and "alpha" in out
    assert json.loads((tmp_path / "stats.json").read_text())["spatial_relationship"]["rankings"] == 8
    assert main(["annotate", "export", "--db", db, "--out", str(tmp_path / "exp"), "--kinds", "simulated"]) == 0
    assert (tmp_path / "exp" / "rankings.jsonl").is_file()


def test_cli_password_never_required_on_argv(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ITERCOMP_PASSWORD", raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)  # no terminal to prompt on
    assert main(["annotate", "add-user", "eve", "--db", str(tmp_path / "d.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "--password-file" in err and len(err.strip().splitlines()) == 1
    # `--password SECRET` is not an option, not even as an abbreviation of --password-file.
    with pytest.raises(SystemExit) as done:
        main(["annotate", "add-user", "eve", "--password", "x"])
    assert done.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
