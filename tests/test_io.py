"""Atomic files and folders (`itercomp.io`) and the weights fingerprint."""

from __future__ import annotations

import pytest
import torch

from itercomp.io import atomic_dir, atomic_open, replace_dir, weights_digest


def test_atomic_dir_replaces_the_folder_only_when_the_block_ends(tmp_path):
    out = tmp_path / "model"
    (out).mkdir()
    (out / "old.txt").write_text("old")
    (tmp_path / "model.tmp").mkdir()  # a leftover of a killed run
    (tmp_path / "model.tmp" / "stale.txt").write_text("stale")
    with atomic_dir(out) as tmp:
        assert list(tmp.iterdir()) == [] and (out / "old.txt").is_file()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_dir_leaves_the_old_folder_when_writing_fails(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_replace_dir_moves_a_finished_folder_into_place(tmp_path):
    (tmp_path / "work" / "a").mkdir(parents=True)
    (tmp_path / "work" / "a" / "x").write_text("new")
    (tmp_path / "final" / "a").mkdir(parents=True)
    (tmp_path / "final" / "a" / "y").write_text("old")
    replace_dir(tmp_path / "work" / "a", tmp_path / "final" / "a")
    assert [p.name for p in (tmp_path / "final" / "a").iterdir()] == ["x"]
    assert not (tmp_path / "work" / "a").exists() and not (tmp_path / "final" / "a.old").exists()
    replace_dir(tmp_path / "final" / "a", tmp_path / "elsewhere" / "b")  # a new parent is made
    assert (tmp_path / "elsewhere" / "b" / "x").read_text() == "new"


@pytest.mark.parametrize("fsync", [True, False])
def test_atomic_open_leaves_no_temp_file(tmp_path, fsync):
    with atomic_open(tmp_path / "a.bin", "wb", fsync=fsync) as f:
        f.write(b"abc")
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "a.bin", "wb", fsync=fsync) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"] and (tmp_path / "a.bin").read_bytes() == b"abc"


def test_weights_digest_depends_on_names_and_values_not_on_order():
    model = torch.nn.Linear(3, 2)
    state = model.state_dict()
    before = weights_digest(state)
    assert before == weights_digest(dict(reversed(state.items()))) and len(before) == 16
    assert before != weights_digest({"other": state["weight"], "bias": state["bias"]})
    with torch.no_grad():
        model.bias[0] += 1e-3
    assert weights_digest(model.state_dict()) != before
