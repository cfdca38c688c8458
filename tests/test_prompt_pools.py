"""The loop's prompt pools (the shapes world's, or files) and `itercomp iterate --dry-run` on the shipped configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itercomp.errors import ItercompError
from itercomp.loop.prompts import PromptSources, file_aspect, file_pools, read_pool, shapes_pools
from itercomp.prompts import split_for, text_key
from itercomp.world.vocab import REWARD_ASPECTS

ROOT = Path(__file__).resolve().parents[1]
PER_SPLIT = {"train": 3, "val": 1}


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _prompts(stem: str, n: int) -> list[str]:
    return [f"a {stem} number {i} beside a lamp" for i in range(n)]


def test_t2i_compbench_file_names_give_the_aspect_and_category():
    assert file_aspect(Path("x/color_train.txt")) == ("attribute_binding", "color")
    assert file_aspect(Path("texture_val.txt")) == ("attribute_binding", "texture")
    assert file_aspect(Path("non_spatial_val.txt")) == ("non_spatial_relationship", "non_spatial")
    assert file_aspect(Path("spatial.txt")) == ("spatial_relationship", "spatial")
    assert file_aspect(Path("complex_val.txt")) == ("complex", "complex")
    assert file_aspect(Path("diffusiondb.txt")) == (None, None)


def test_a_pool_reads_text_and_jsonl_with_aspects_from_prefix_row_or_name(tmp_path):
    color = _write(tmp_path / "color_train.txt", ["a red car and a blue bird", "a red car and a blue bird", "x y"])
    other = _write(tmp_path / "mine.txt", ["a cat on the left of a dog"])
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "a man holding a cup", "aspect": "non_spatial_relationship"}) + "\n")
    pool = read_pool([color, f"spatial_relationship={other}", str(rows)], "ranking")
    assert [(r["prompt"], r["aspect"], r["category"]) for r in pool] == [
        ("a red car and a blue bird", "attribute_binding", "color"),  # the duplicate line is read once
        ("x y", "attribute_binding", "color"),
        ("a cat on the left of a dog", "spatial_relationship", None),
        ("a man holding a cup", "non_spatial_relationship", None),
    ]


@pytest.mark.parametrize(
    "entry,needle",
    [
        ("mine.txt", "no aspect; write it as <aspect>="),
        ("spatial=mine.txt", "names the aspect 'spatial'"),
        ("missing.txt", "prompts file not found"),
    ],
)
def test_a_pool_file_without_a_known_aspect_is_refused(tmp_path, monkeypatch, entry, needle):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "mine.txt", ["a cat on the left of a dog"])
    with pytest.raises(ItercompError, match=needle):
        read_pool([entry], "ranking")


def test_sources_must_match_their_mode():
    with pytest.raises(ItercompError, match="set prompts.source=files"):
        PromptSources(ranking=("a.txt",))
    with pytest.raises(ItercompError, match="needs prompts.test"):
        PromptSources(source="files", ranking=("a.txt",))
    with pytest.raises(ItercompError, match="must be one of shapes, files"):
        PromptSources(source="hub")


@pytest.fixture
def pool_files(tmp_path):
    """Ranking files of each aspect, a test file that repeats two ranking prompts, a fine-tuning file."""
    files = {
        "color_train.txt": _prompts("red car", 60),
        "spatial_train.txt": _prompts("cat left", 60),
        "non_spatial_train.txt": _prompts("man holding", 60),
        "color_val.txt": [*_prompts("green bench", 5), "a red car number 0 beside a lamp"],
        "spatial_val.txt": [*_prompts("bird above", 5), "A  cat left number 1 beside a lamp"],
        "complex_val.txt": _prompts("busy street", 5),
        "diffusiondb.txt": [*_prompts("castle", 10), "a red car number 0 beside a lamp"],
    }
    return {name: _write(tmp_path / name, lines) for name, lines in files.items()}


def _sources(files, finetune=True) -> PromptSources:
    return PromptSources(
        source="files",
        ranking=(files["color_train.txt"], files["spatial_train.txt"], files["non_spatial_train.txt"]),
        finetune=(files["diffusiondb.txt"],) if finetune else (),
        test=(files["color_val.txt"], files["spatial_val.txt"], files["complex_val.txt"]),
    )


def test_file_pools_keep_every_test_prompt_out_of_training(pool_files):
    pools = file_pools(_sources(pool_files), seed=0, test_per_aspect=100)
    test = {text_key(p) for _, p in pools.test}
    assert len(pools.test) == 6 + 6 + 5
    training = [r["prompt"] for splits in pools.ranking.values() for rows in splits.values() for r in rows]
    assert not test & {text_key(p) for p in training + pools.finetune}
    assert pools.dropped == 3  # two ranking prompts (one spelled differently) and one fine-tuning prompt
    assert len(pools.finetune) == 10
    # Without a fine-tuning file, the ranking pool's train split is fine-tuned on.
    pools = file_pools(_sources(pool_files, finetune=False), seed=0, test_per_aspect=100)
    assert sorted(pools.finetune) == sorted(r["prompt"] for s in pools.ranking.values() for r in s["train"])


def test_file_pools_split_by_prompt_and_rounds_take_fresh_slices(pool_files):
    pools = file_pools(_sources(pool_files), seed=0, test_per_aspect=2)
    assert [a for a, _ in pools.test] == ["attribute_binding"] * 2 + ["spatial_relationship"] * 2 + ["complex"] * 2
    for aspect in REWARD_ASPECTS:
        assert all(split_for(r["prompt"]) == "val" for r in pools.ranking[aspect]["val"])
        assert all(split_for(r["prompt"]) != "val" for r in pools.ranking[aspect]["train"])
    one, two = pools.round_prompts(1, PER_SPLIT), pools.round_prompts(2, PER_SPLIT)
    assert len(one) == len(two) == 3 * 4 and not {p["id"] for p in one} & {p["id"] for p in two}
    again = file_pools(_sources(pool_files), seed=0, test_per_aspect=2)
    assert again.round_prompts(2, PER_SPLIT) == two  # the same rounds for the same seed
    other = file_pools(_sources(pool_files), seed=1, test_per_aspect=2)
    assert other.round_prompts(1, PER_SPLIT) != one
    with pytest.raises(ItercompError, match="train-split prompts of attribute_binding; 30 round"):
        pools.check(30, PER_SPLIT)


def test_shapes_pools_are_the_same_prompts_whatever_the_number_of_rounds():
    short, long = shapes_pools(0, 2, PER_SPLIT, 4, 3), shapes_pools(0, 5, PER_SPLIT, 4, 3)
    assert short.round_prompts(2, PER_SPLIT) == long.round_prompts(2, PER_SPLIT)
    assert short.test == long.test and len(short.test) == 12 and len(short.finetune) == 16


@pytest.mark.parametrize("name", ["iterate_sdxl", "iterate_sana"])
def test_the_shipped_real_model_configs_pass_the_dry_run(name, monkeypatch, capsys, tmp_path):
    from itercomp.cli import main

    monkeypatch.chdir(ROOT)  # the configs' prompt files are relative to the repository root
    config = ROOT / "recipes" / "configs" / f"{name}.yaml"
    out = tmp_path / "run"
    assert main(["iterate", "--config", str(config), "--output-dir", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "nothing run" in printed and "t2i_compbench" in printed and "<- fine-tuned" in printed
    assert "round 3" in printed and not out.exists()


def test_one_jsonl_with_a_split_column_serves_every_pool(tmp_path):
    rows = [{"prompt": f"a red car number {i}", "aspect": "attribute_binding", "split": s}
            for i, s in enumerate(["train"] * 6 + ["val"] * 2 + ["test"] * 2)]  # fmt: skip
    rows.append({"prompt": "a busy street at night", "aspect": "complex", "split": "test"})
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pools = file_pools(
        PromptSources(source="files", ranking=(str(path),), test=(str(path),)), seed=0, test_per_aspect=9
    )
    assert sorted(p for _, p in pools.test) == sorted(r["prompt"] for r in rows if r["split"] == "test")
    ranking = pools.ranking["attribute_binding"]
    assert len(ranking["train"]) == 6 and len(ranking["val"]) == 2  # the column, not the hash, places them
    assert pools.is_val("A red car number 6") and not pools.is_val("a red car number 0")
    assert len(pools.finetune) == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a busy street", "aspect": "complex"}) + "\n")
    with pytest.raises(ItercompError, match="is a complex prompt; only .* are ranked"):
        file_pools(PromptSources(source="files", ranking=(str(bad),), test=(str(path),)), seed=0, test_per_aspect=1)
