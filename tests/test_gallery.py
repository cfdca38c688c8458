"""The model gallery: YAML specs, the diffusers generator on tiny real pipelines, the shapes members, and
`itercomp gallery generate` (resume, kill and re-run, two processes under accelerate)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from gallery import load_gallery, parse_gallery
from gallery.run import read_png_metadata, render_gallery, world_prompts
from gallery.tiny import TINY_CALL, TINY_KINDS, save_tiny_pipeline
from itercomp.cli import main
from itercomp.errors import ItercompError
from itercomp.io import read_jsonl, sha256_file
from itercomp.records import ImageRecord, image_id
from itercomp.world import generate_prompts, score

REPO = Path(__file__).resolve().parents[1]
PROCEDURAL = ["layout_planner", "bag_of_words", "colour_leak"]


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), *extra.pop("paths", [])]))
    env.update(extra)
    return env


def _manifest(out: Path) -> list[ImageRecord]:
    return [ImageRecord.from_dict(r) for r in read_jsonl(out / "manifest.jsonl")]


def _assert_complete(out: Path, expected: int):
    records = _manifest(out)
    ids = [r.image_id for r in records]
    assert len(ids) == len(set(ids)) == expected
    for r in records:
        assert r.image_id == image_id(r.prompt_id, r.generator, r.seed)
        assert r.path == f"images/{r.image_id}.png"
        assert sha256_file(out / r.path) == r.sha256
    assert len(list((out / "images").glob("*.png"))) == expected
    assert not list((out / "images").glob(".*.tmp"))


# ---- specs ----------------------------------------------------------------------------------------------------


def test_shipped_galleries_validate():
    shapes = load_gallery("shapes")
    assert shapes.names == ["base", "pooled", "last_layer", *PROCEDURAL]
    for spec in shapes.members[:3]:
        assert spec.type == "diffusers"
        assert spec.config.pipeline == "itercomp.models.pipeline.ShapesDiTPipeline"
        assert spec.build().model_path == str(REPO / "itercomp" / "weights" / spec.name)
    paper = load_gallery(REPO / "gallery" / "itercomp_paper.yaml")
    assert paper.names == ["sd15", "sdxl", "sd3_medium", "flux_dev"]
    by_name = {m.name: m.config for m in paper.members}
    assert by_name["flux_dev"].model == "black-forest-labs/FLUX.1-dev"
    assert by_name["flux_dev"].dtype == "bfloat16" and by_name["flux_dev"].call["guidance_scale"] == 3.5
    assert by_name["sd3_medium"].call["num_inference_steps"] == 28
    assert all(m.build().unavailable() is None for m in paper.members)  # hub ids: nothing to check locally


def _member(**fields):
    return {"name": "m1", "type": "diffusers", "model": "org/model", **fields}


@pytest.mark.parametrize(
    "member,needles",
    [
        (_member(stepz=3), ["'m1'", "unknown field 'stepz'"]),
        (_member(batch_size="four"), ["'m1'", "'batch_size' must be int"]),
        (_member(dtype="float8"), ["'m1'", "'dtype'", "float16"]),
        (_member(scheduler={"class": "NoSuchScheduler"}), ["'m1'", "scheduler.class", "NoSuchScheduler"]),
        (_member(scheduler={"class": "DDIMScheduler", "config": {"eta": 1}}), ["'m1'", "scheduler.config", "'eta'"]),
        (_member(pipeline="StableDiffusionPipeline", call={"steps": 4}), ["'m1'", "field 'call'", "'steps'"]),
        (_member(pipeline="NoSuchPipeline"), ["'m1'", "NoSuchPipeline"]),
        (_member(call={"generator": 1}), ["'m1'", "'generator'"]),
        ({"name": "m1", "type": "diffusers"}, ["'m1'", "'model' is required"]),
        ({"name": "m1", "type": "layout_planner", "shape_confusion": 1.5}, ["'m1'", "shape_confusion"]),
        ({"name": "m1", "type": "layout_planner", "box_relations": ["near"]}, ["'m1'", "box_relations", "near"]),
        ({"name": "m1", "type": "no_such_type"}, ["'m1'", "field 'type'", "no_such_type"]),
        ({"name": "m-1", "type": "bag_of_words"}, ["member #1", "'name'"]),
        ({"name": "m1", "type": "bag_of_words", "strengths": "all"}, ["'m1'", "'strengths'"]),
    ],
)
def test_schema_errors_name_member_and_field(member, needles):
    with pytest.raises(ItercompError) as error:
        parse_gallery({"name": "g", "members": [member]}, source="g.yaml")
    for needle in ["g.yaml", *needles]:
        assert needle in str(error.value)


def test_duplicate_member_names_and_unknown_members():
    member = {"name": "m1", "type": "bag_of_words"}
    with pytest.raises(ItercompError, match="used twice"):
        parse_gallery({"members": [member, member]})
    with pytest.raises(ItercompError, match="its members are m1"):
        parse_gallery({"members": [member]}).select(["m2"])


def test_cli_validate_and_list(tmp_path, capsys):
    assert main(["gallery", "validate", "shapes", "itercomp_paper"]) == 0
    assert capsys.readouterr().out.count("ok: ") == 2
    assert main(["gallery", "list"]) == 0
    out = capsys.readouterr().out
    assert "layout_planner  [type layout_planner]  ready" in out
    assert "base  [type diffusers]  ready" in out  # the shipped weights (itercomp/weights)
    assert main(["gallery", "list", "--gallery", str(_gallery_without_weights(tmp_path))]) == 0
    assert "base  [type diffusers]  unavailable" in capsys.readouterr().out


# ---- shapes members -------------------------------------------------------------------------------------------


def _shapes_member(name):
    return load_gallery("shapes").select([name])[0].build()


@pytest.mark.parametrize("name", PROCEDURAL)
def test_shapes_members_deterministic_and_batch_independent(name):
    member = _shapes_member(name)
    prompts = generate_prompts("complex", "train", 4) + generate_prompts("non_spatial_relationship", "train", 4)
    seeds = list(range(len(prompts)))
    batched = member.generate(prompts, seeds)
    single = [member.generate([p], [s])[0] for p, s in zip(prompts, seeds)]
    for (a, meta_a), (b, meta_b) in zip(batched, single):
        assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
        assert np.array_equal(a, b) and meta_a == meta_b
    other = member.generate(prompts, [s + 100 for s in seeds])
    assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(batched, other))


def _verdicts(name, aspect, n=12, seeds=(0, 1)):
    member = _shapes_member(name)
    prompts = generate_prompts(aspect, "val", n)
    out = []
    for seed in seeds:
        for prompt, (image, meta) in zip(prompts, member.generate(prompts, [seed] * n)):
            out.append((prompt, score(image, prompt).correct, meta))
    return out


def test_shapes_members_fail_where_documented():
    # bag_of_words: objects and attributes always right, relations ignored
    assert all(ok for _, ok, _ in _verdicts("bag_of_words", "attribute_binding"))
    assert sum(ok for _, ok, _ in _verdicts("bag_of_words", "spatial_relationship")) < 12
    # colour_leak: whatever did not leak is entirely right; leaks happen
    leak = _verdicts("colour_leak", "complex")
    assert all(ok for _, ok, meta in leak if meta["leaked"] is None)
    assert any(meta["leaked"] for _, _, meta in leak) and not any(ok for _, ok, meta in leak if meta["leaked"])
    # layout_planner: box relations exact unless the instance renderer erred; inside/touching never drawn
    for _, ok, meta in _verdicts("layout_planner", "spatial_relationship"):
        assert ok or meta["instance_errors"]
    planner = _verdicts("layout_planner", "non_spatial_relationship", n=20)
    dropped = [ok for _, ok, meta in planner if meta["dropped_relations"] and meta["layout_fallback"] != "full scene"]
    assert dropped and not any(dropped)


# ---- the diffusers generator on tiny real pipelines -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    for kind in TINY_KINDS:
        save_tiny_pipeline(kind, root / kind)
    return root


def _write_gallery(folder: Path, members: list[dict]) -> Path:
    path = folder / "gallery.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "members": members}, sort_keys=False))
    return path


def _tiny_member(kind: str, **extra) -> dict:
    call = {"num_inference_steps": 2, **TINY_CALL[kind]}
    return {"name": kind, "type": "diffusers", "model": f"./{kind}", "call": call, "batch_size": 4, **extra}


EXPECTED_PIPELINE = {
    "stable_diffusion": "StableDiffusionPipeline",
    "stable_diffusion_xl": "StableDiffusionXLPipeline",
    "stable_diffusion_3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "sana": "SanaPipeline",
}


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_diffusers_member_through_the_user_path(kind, tiny_models, tmp_path, capsys):
    """YAML spec -> registry -> generator -> generate, via the CLI, on a pipeline saved to disk."""
    extra = {}
    if kind == "stable_diffusion":  # also: a pipeline class by import path, a scheduler swap with overrides
        extra = {
            "pipeline": "diffusers.StableDiffusionPipeline",
            "scheduler": {"class": "EulerDiscreteScheduler", "config": {"timestep_spacing": "trailing"}},
        }
    gallery = _write_gallery(tiny_models, [_tiny_member(kind, **extra)])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle to the left of a blue square\na green bench and a blue bowl\n")
    out = tmp_path / "run"
    argv = ["gallery", "generate", "--gallery", str(gallery), "--prompts", str(prompts)]
    argv += ["--images-per-prompt", "2", "--out", str(out)]
    assert main(argv) == 0
    _assert_complete(out, 4)
    records = _manifest(out)
    assert {r.aspect for r in records} == {"spatial_relationship", "unknown"}
    assert {r.seed for r in records} == {0, 1}
    first = out / records[0].path
    assert np.asarray(Image.open(first)).shape == (32, 32, 3)
    meta = read_png_metadata(first)
    assert meta["pipeline"] == EXPECTED_PIPELINE[kind] and meta["num_inference_steps"] == 2
    if kind == "stable_diffusion":
        assert meta["scheduler"] == "EulerDiscreteScheduler"
    assert (out / "grids" / f"{records[0].prompt_id}.png").is_file()
    capsys.readouterr()
    assert main(argv) == 0
    assert "resuming: 4 of 4 images already exist" in capsys.readouterr().out


def test_diffusers_images_depend_on_seed_not_batch(tiny_models, tmp_path):
    gallery = parse_gallery(
        {"members": [_tiny_member("stable_diffusion", batch_size=3)]}, source="g.yaml", root=tiny_models
    )
    prompts = world_prompts("attribute_binding", "train", 3)
    render_gallery(gallery, prompts, tmp_path / "a", images_per_prompt=2, progress=False, log=lambda _: None)
    render_gallery(gallery, prompts, tmp_path / "b", images_per_prompt=2, batch_size=1, progress=False, log=print)
    a, b = _manifest(tmp_path / "a"), _manifest(tmp_path / "b")
    assert [r.image_id for r in a] == [r.image_id for r in b]
    for ra, rb in zip(a, b):
        pa = np.asarray(Image.open(tmp_path / "a" / ra.path), dtype=int)
        pb = np.asarray(Image.open(tmp_path / "b" / rb.path), dtype=int)
        assert np.abs(pa - pb).max() <= 2  # batched matmuls may round differently; the noise is the same
    seeds = [np.asarray(Image.open(tmp_path / "a" / r.path)) for r in a[:2]]
    assert not np.array_equal(*seeds)


# ---- the command ----------------------------------------------------------------------------------------------


def _gallery_without_weights(tmp_path) -> Path:
    """The shapes gallery with its DiT members pointing at folders that do not exist."""
    text = (Path(__file__).resolve().parents[1] / "gallery" / "shapes.yaml").read_text()
    path = tmp_path / "no_weights.yaml"
    path.write_text(text.replace("../itercomp/weights/", "./missing/"))
    return path


def test_generate_members_subset_resume_and_errors(tmp_path, capsys):
    out = tmp_path / "run"
    gallery = ["--gallery", str(_gallery_without_weights(tmp_path))]
    base = ["gallery", "generate", *gallery, "--aspect", "spatial_relationship", "-n", "3", "--out", str(out)]
    assert main(base) == 2  # the DiT weights are not there: a clear error naming the way out
    err = capsys.readouterr().err
    assert "'base'" in err and "--members layout_planner,bag_of_words,colour_leak" in err
    assert main([*base, "--members", "layout_planner", "--images-per-prompt", "2"]) == 0
    _assert_complete(out, 6)
    capsys.readouterr()
    assert main([*base, "--members", "layout_planner,colour_leak", "--images-per-prompt", "2"]) == 0
    assert (
        "resuming: 6 of 12 images already exist and are skipped; rendering the remaining 6" in capsys.readouterr().out
    )
    _assert_complete(out, 12)
    assert main([*base, "--skip-unavailable", "-n", "2"]) == 0
    assert "skipping member 'base'" in capsys.readouterr().out
    assert len(read_jsonl(out / "prompts.jsonl")) == 3
    assert main([*base, "--members", "layout_planner,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_generate_reads_jsonl_prompts(tmp_path):
    rows = [{"prompt": p, "aspect": "complex"} for p in generate_prompts("complex", "val", 2)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["gallery", "generate", "--prompts", str(tmp_path / "p.jsonl"), "--members", "bag_of_words"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert [r.prompt for r in _manifest(tmp_path / "run")] == [r["prompt"] for r in rows]


def test_shapes_member_rejects_foreign_prompt_clearly(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a green bench and a blue bowl\n")
    argv = ["gallery", "generate", "--prompts", str(tmp_path / "p.txt"), "--members", "layout_planner"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "gallery member 'layout_planner' cannot draw a prompt" in capsys.readouterr().err


ANY_TEXT_PLUGIN = """
from dataclasses import dataclass

import numpy as np

from gallery.base import Generator


@dataclass
class AnyTextConfig:
    batch_size: int = 4


class AnyText(Generator):
    # Draws any text, as a diffusers model does: a black canvas.
    Config = AnyTextConfig

    def generate(self, prompts, seeds):
        return [(np.zeros((32, 32, 3), np.uint8), {}) for _ in prompts]
"""


def test_every_prompt_is_checked_against_every_member_before_rendering(tmp_path, capsys, monkeypatch):
    """A prompt one member refuses stops the run before any member renders (not after the others did)."""
    (tmp_path / "anytext.py").write_text(ANY_TEXT_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    members = [{"name": "anything", "type": "anytext:AnyText"}, {"name": "layout_planner", "type": "layout_planner"}]
    gallery = _write_gallery(tmp_path, members)
    shapes_prompt = generate_prompts("spatial_relationship", "train", 1)[0]
    (tmp_path / "p.txt").write_text(f"{shapes_prompt}\na green bench and a blue bowl\n")
    out = tmp_path / "run"
    argv = ["gallery", "generate", "--gallery", str(gallery), "--prompts", str(tmp_path / "p.txt"), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "gallery member 'layout_planner' cannot draw a prompt: 'a green bench and a blue bowl'" in err
    assert "Nothing was rendered" in err and "--members anything" in err
    assert not list(out.glob("images/*.png")) and not (out / "manifest.jsonl").exists()
    # Without the refused prompt the same run goes through.
    (tmp_path / "p.txt").write_text(f"{shapes_prompt}\n")
    assert main(argv) == 0
    _assert_complete(out, 2)


SLOW_PLUGIN = """
import time
from gallery.shapes_members import BagOfWords

class SlowBag(BagOfWords):
    def generate(self, prompts, seeds):
        time.sleep(0.25)
        return super().generate(prompts, seeds)
"""


def test_killed_run_completes_on_rerun_without_duplicates(tmp_path):
    (tmp_path / "slowplug.py").write_text(textwrap.dedent(SLOW_PLUGIN))
    gallery = _write_gallery(tmp_path, [{"name": "slow", "type": "slowplug:SlowBag", "batch_size": 1}])
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "itercomp.cli", "gallery", "generate", "--gallery", str(gallery)]
    cmd += ["--aspect", "complex", "-n", "8", "--images-per-prompt", "2", "--out", str(out)]
    env = _env(paths=[str(tmp_path)])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "images").glob("*.png"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted((out / "images").glob("*.png"))
    assert 5 <= len(finished) < 16, "the run should have been killed half-way"
    assert not (out / "manifest.jsonl").exists()
    # A file cut short (as by a power loss) does not count as finished.
    finished[0].write_bytes(finished[0].read_bytes()[:40])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {len(finished) - 1} of 16 images already exist" in done.stdout
    _assert_complete(out, 16)


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="no accelerate")
def test_two_processes_split_the_work_and_merge_once(tmp_path):
    out = tmp_path / "run"
    launcher = str(Path(sys.executable).parent / "accelerate")
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "itercomp.cli", "gallery", "generate"]
    cmd += ["--aspect", "complex", "-n", "5", "--images-per-prompt", "2", "--members", ",".join(PROCEDURAL)]
    cmd += ["--out", str(out)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2
    assert run["rendered_per_process"] == [15, 15]
    assert done.stdout.count("images in") == 2  # the banner and the manifest line, printed by the main process only
    _assert_complete(out, 30)
    single = tmp_path / "single"
    assert main(["gallery", "generate", *cmd[cmd.index("--aspect") : cmd.index("--out")], "--out", str(single)]) == 0
    assert {r.image_id: r.sha256 for r in _manifest(out)} == {r.image_id: r.sha256 for r in _manifest(single)}
