"""Guidelines per aspect from a file: the loader's checks, the text the API and the ranking page show, the CLI flag
and the loop's `serve_in_background`."""

from __future__ import annotations

import json
import re
import time
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml
from annotation_helpers import LiveServer

from annotation_app.config import AppConfig
from annotation_app.guidelines import GUIDELINES, GUIDELINES_DIR, SHIPPED_GUIDELINES, load_guidelines
from annotation_app.loadtest import free_port
from annotation_app.store import Store
from annotation_app.tasks import add_gallery_tasks
from annotation_app.toy_gallery import make_toy_gallery
from annotation_app.ui import build_ui
from itercomp.cli import main
from itercomp.errors import ItercompError
from itercomp.world.vocab import REWARD_ASPECTS

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = {aspect: f"**Rank** by how well the prompt's {aspect} holds (custom text)." for aspect in REWARD_ASPECTS}


def write(tmp_path: Path, content, name: str = "guidelines.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """One prompt per aspect: three tasks, one of each aspect."""
    root = tmp_path_factory.mktemp("guidelines")
    make_toy_gallery(root / "gallery", prompts_per_aspect=1)
    (root / "custom.yaml").write_text(yaml.safe_dump(CUSTOM))
    return root


def fresh_store(root: Path, name: str) -> Store:
    store = Store(root / f"{name}.sqlite")
    store.add_user("alice", "alice-password")
    return store


# ---- the loader -----------------------------------------------------------------------------------------------


def test_default_is_the_shapes_text():
    default = load_guidelines(None)
    assert list(default) == list(REWARD_ASPECTS)
    assert "fill (solid or hollow)" in default["attribute_binding"]
    assert "to the left of" in default["spatial_relationship"]
    assert default == GUIDELINES == load_guidelines("shapes") == load_guidelines(GUIDELINES_DIR / "shapes.yaml")
    default["attribute_binding"] = "changed"  # a copy: the constant stays as read
    assert GUIDELINES["attribute_binding"] != "changed"
    assert AppConfig().guideline_texts == GUIDELINES


def test_real_images_file_ships_with_the_package():
    real = load_guidelines("real_images")
    assert list(real) == list(REWARD_ASPECTS)
    assert "colour, shape, texture" in real["attribute_binding"]
    assert "on the left of" in real["spatial_relationship"]
    assert "holding" in real["non_spatial_relationship"]
    assert not [a for a in REWARD_ASPECTS if real[a] == GUIDELINES[a] or "hollow" in real[a]]
    # pyproject's package-data patterns take both files into the wheel.
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1].split("\n[")[0]
    patterns = re.findall(r'"(\*\.[^"]+)"', section)
    shipped = sorted(p.name for p in GUIDELINES_DIR.glob("*.y*ml"))
    assert shipped == sorted(f"{name}.yaml" for name in SHIPPED_GUIDELINES)
    assert all(any(fnmatch(name, pattern) for pattern in patterns) for name in shipped)


def test_custom_file_yaml_or_json(tmp_path):
    padded = {aspect: f"\n{text}\n\n" for aspect, text in CUSTOM.items()}
    assert load_guidelines(write(tmp_path, padded)) == CUSTOM
    assert load_guidelines(str(write(tmp_path, json.dumps(CUSTOM), "guidelines.json"))) == CUSTOM
    block = "".join(f"{aspect}: |\n  - first line\n  - second line\n" for aspect in REWARD_ASPECTS)
    assert load_guidelines(write(tmp_path, block))["spatial_relationship"] == "- first line\n- second line"


@pytest.mark.parametrize(
    "content, needle",
    [
        ({**CUSTOM, "colour_binding": "x"}, "unknown aspect(s) 'colour_binding'; the aspects are attribute_binding, "
         "spatial_relationship, non_spatial_relationship"),
        ({**CUSTOM, "spatial_relationship": "  \n"}, "the guideline of spatial_relationship is empty"),
        ({**CUSTOM, "spatial_relationship": None}, "the guideline of spatial_relationship must be Markdown text"),
        ({**CUSTOM, "attribute_binding": ["a", "b"]}, "the guideline of attribute_binding must be Markdown text"),
        ({"attribute_binding": "x"}, "has no guideline for spatial_relationship, non_spatial_relationship"),
        (list(CUSTOM.values()), "must map each of attribute_binding"),
        ("", "got an empty file"),
        ("attribute_binding: [unclosed\n", "is not valid YAML"),
    ],
    ids=["unknown-aspect", "empty-text", "null-text", "list-text", "missing-aspects", "not-a-mapping", "empty-file",
         "bad-yaml"],
)  # fmt: skip
def test_bad_file_refused_with_the_fix(tmp_path, content, needle):
    path = write(tmp_path, content)
    with pytest.raises(ItercompError) as refused:
        load_guidelines(path)
    message = str(refused.value)
    assert needle in message and str(path) in message and "\n" not in message
    with pytest.raises(ItercompError, match=re.escape(needle)):
        AppConfig(guidelines=path)  # the server's config refuses it when built, before anything is served


def test_missing_file_names_the_shipped_ones(tmp_path):
    with pytest.raises(ItercompError, match="guidelines file not found: .*real_image.*shapes, real_images"):
        load_guidelines("real_image")  # a typo of a shipped name


# ---- the app shows the configured text ------------------------------------------------------------------------


def rank_everything(next_task, submit) -> dict[str, str]:
    """Take tasks until none is left, submitting each as shown; returns each aspect's guideline as served."""
    served = {}
    while (task := next_task()) is not None:
        assert task["aspect"] not in served
        served[task["aspect"]] = task["guideline"]
        submit(task)
    return served


def api_guidelines(client: httpx.Client) -> dict[str, str]:
    token = client.post("/api/login", json={"username": "alice", "password": "alice-password"}).json()["token"]
    client.headers["Authorization"] = f"Bearer {token}"

    def submit(task):
        order = [c["image_id"] for c in task["candidates"]]
        body = {"submission_key": task["submission_key"], "prompt_id": task["prompt_id"], "aspect": task["aspect"]}
        assert client.post("/api/rankings", json={**body, "order": order}).status_code == 201

    return rank_everything(lambda: client.get("/api/tasks/next").json()["task"], submit)


def test_api_serves_the_configured_text_for_each_aspect(gallery):
    store = fresh_store(gallery, "api")
    config = AppConfig(db=store.url, gallery_run=gallery / "gallery", guidelines=gallery / "custom.yaml")
    server = LiveServer(store, config)
    try:
        with server.client() as client:
            assert api_guidelines(client) == CUSTOM
    finally:
        server.stop()


def test_page_shows_the_configured_text_for_each_aspect(gallery):
    store = fresh_store(gallery, "page")
    config = AppConfig(db=store.url, gallery_run=gallery / "gallery", guidelines=gallery / "custom.yaml")
    add_gallery_tasks(store, config)
    demo = build_ui(store, config, slots=4)
    show = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "show")
    request = SimpleNamespace(username="alice")

    def next_task():
        outputs = show(request)
        state = outputs[0]
        return state and {**state, "guideline": outputs[3]["value"]}

    def submit(task):
        store.submit(
            "alice", task["key"], task["shown"], prompt_id=task["prompt_id"], aspect=task["aspect"], blind=True
        )

    assert rank_everything(next_task, submit) == CUSTOM


# ---- how a server gets a file: the CLI and the loop -----------------------------------------------------------


def test_cli_flag_reaches_the_server_config(tmp_path, gallery, monkeypatch, capsys):
    served = []
    monkeypatch.setattr("annotation_app.server.serve", lambda config, **_: served.append(config))
    base = ["annotate", "serve", "--db", str(tmp_path / "cli.sqlite"), "--gallery-run", str(gallery / "gallery")]
    assert main([*base, "--guidelines", str(gallery / "custom.yaml")]) == 0
    assert main([*base, "--guidelines", "real_images"]) == 0
    assert main(base) == 0
    custom, real, default = served
    assert custom.guidelines == gallery / "custom.yaml" and custom.guideline_texts == CUSTOM
    assert real.guideline_texts == load_guidelines("real_images")
    assert default.guidelines is None and default.guideline_texts == GUIDELINES
    # A bad file stops the command before the server starts, with the message on one line (exit code 2).
    bad = write(tmp_path, {"attribute_binding": "x"})
    assert main([*base, "--guidelines", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "has no guideline for spatial_relationship" in err and len(err.strip().splitlines()) == 1
    assert len(served) == 3


def test_loop_serves_with_a_guidelines_file(gallery):
    from itercomp.loop.human import serve_in_background

    store = fresh_store(gallery, "loop")
    add_gallery_tasks(store, AppConfig(db=store.url, gallery_run=gallery / "gallery"))
    with pytest.raises(ItercompError, match="unknown aspect"):
        serve_in_background(store.url, 0, 1, "127.0.0.1", free_port(), guidelines=str(write(gallery, {"x": "y"})))
    port = free_port()
    stop = serve_in_background(store.url, 0, 1, "127.0.0.1", port, guidelines=str(gallery / "custom.yaml"))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.time() + 60
            while True:
                try:
                    client.get("/api/progress")
                    break
                except httpx.TransportError:
                    assert time.time() < deadline, "the loop's server did not start"
                    time.sleep(0.1)
            assert api_guidelines(client) == CUSTOM
    finally:
        stop()
