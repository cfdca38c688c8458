"""Prompt ids, splits and prompt files for any text (`itercomp.prompts`): one id per prompt wherever it enters."""

from __future__ import annotations

import pytest

from annotation_app.interchange import parse_itercomp
from gallery.run import load_prompt_file
from itercomp.errors import ItercompError
from itercomp.prompts import generic_prompt_id, read_prompt_file, split_for
from itercomp.world import generate_prompts, prompt_id, split_of

ASTRONAUT = "A photo of an astronaut riding a horse"


def test_the_gallery_and_the_importer_give_a_capitalised_prompt_one_id(tmp_path):
    (tmp_path / "prompts.txt").write_text(ASTRONAUT + "\n")
    [entry] = load_prompt_file(tmp_path / "prompts.txt")
    entries = [{"prompt": ASTRONAUT, "image_a": "a.png", "image_b": "b.png", "rank": [2, 1]}]
    [imported] = parse_itercomp(entries, "attribute_binding", tmp_path, "rankings.json")
    # The gallery's id from before the two shared one helper: existing galleries keep their ids.
    assert entry["id"] == imported.task.prompt_id == "p2d7c12b01e"


def test_ids_ignore_case_and_spacing_and_keep_the_worlds_id():
    assert generic_prompt_id(ASTRONAUT) == generic_prompt_id("a photo of  an astronaut riding a horse ")
    assert generic_prompt_id(ASTRONAUT) != generic_prompt_id("a photo of an astronaut riding a camel")
    world = generate_prompts("spatial_relationship", "train", 3, seed=1)
    assert [generic_prompt_id(p) for p in world] == [prompt_id(p) for p in world]


def test_split_for_uses_world_split_or_a_stable_hash():
    prompt = generate_prompts("attribute_binding", "test", 1)[0]
    assert split_for(prompt) == split_of(prompt) == "test"
    assert split_for(ASTRONAUT) == split_for("a photo of an  astronaut riding a horse ") in ("train", "val", "test")
    splits = [split_for(f"a photo of {k} dogs") for k in range(400)]
    assert {s: splits.count(s) for s in ("val", "test")} == pytest.approx({"val": 40, "test": 40}, abs=20)  # 2 of 20
    assert set(splits) == {"train", "val", "test"}


def test_read_prompt_file_reads_text_and_json_lines(tmp_path):
    (tmp_path / "a.txt").write_text("  a red circle and a blue square \n\nA cat\n")
    assert read_prompt_file(tmp_path / "a.txt") == [{"prompt": "a red circle and a blue square"}, {"prompt": "A cat"}]
    (tmp_path / "b.jsonl").write_text('{"prompt": "A cat", "id": "c1", "aspect": "x"}\n')
    assert read_prompt_file(tmp_path / "b.jsonl") == [{"prompt": "A cat", "id": "c1", "aspect": "x"}]
    (tmp_path / "c.jsonl").write_text('{"prompt": "A cat"}\n{"text": "A dog"}\n')
    with pytest.raises(ItercompError, match=r"c.jsonl:2 has no 'prompt' string"):
        read_prompt_file(tmp_path / "c.jsonl")
    (tmp_path / "d.txt").write_text("\n  \n")
    with pytest.raises(ItercompError, match="holds no prompts"):
        read_prompt_file(tmp_path / "d.txt")
    with pytest.raises(ItercompError, match="prompts file not found"):
        read_prompt_file(tmp_path / "e.txt")
