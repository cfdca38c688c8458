"""The annotation app under attack: each test is one class of probe that used to get through.

Paths outside the gallery, sessions that outlive a password reset, password guessing and name enumeration, tokens
that never expire, hostile JSON, ranking that names the generator, a mistyped database path, half-written
imports, and world-readable database files.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat

import pytest
from annotation_helpers import LiveServer, tell_tale_gallery
from PIL import Image

from annotation_app import passwords
from annotation_app.config import AppConfig
from annotation_app.interchange import import_file
from annotation_app.store import Store, api_tokens, tasks
from annotation_app.tasks import tasks_from_gallery
from annotation_app.toy_gallery import TOY_GENERATORS, make_toy_gallery
from annotation_app.ui import prompt_heading
from itercomp.cli import main
from itercomp.errors import ItercompError
from itercomp.io import read_jsonl, write_jsonl

PASSWORD = "a long enough password"
LIMIT_MESSAGE = r"Too many failed logins for this name or from this address: try again in \d+ (s|minutes)\."


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    tell_tale_gallery(root / "gallery")
    store = Store(root / "db.sqlite")
    for name in ("alice", "bob", "carol", "dave"):
        store.add_user(name, PASSWORD)
    store.add_user("root", PASSWORD, admin=True)
    server = LiveServer(store, AppConfig(db=store.url, gallery_run=root / "gallery", overlap=3))
    yield server, store, root
    server.stop()


@pytest.fixture
def guarded(tmp_path):
    """A server of its own with low login limits (it ends up refusing every login from this address)."""
    make_toy_gallery(tmp_path / "gallery", prompts_per_aspect=1)
    store = Store(tmp_path / "db.sqlite")
    for name in ("bob", "dave"):
        store.add_user(name, PASSWORD)
    config = AppConfig(
        db=store.url, gallery_run=tmp_path / "gallery", login_failures_per_user=3, login_failures_per_address=6
    )
    server = LiveServer(store, config)
    yield server
    server.stop()


def api_login(client, name, password=PASSWORD):
    response = client.post("/api/login", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    client.headers["Authorization"] = f"Bearer {response.json()['token']}"
    return response.json()


def page_login(client, name, password=PASSWORD):
    """Log in through the ranking page's form (Gradio's /login); the client keeps the session cookie."""
    return client.post("/login", data={"username": name, "password": password})


# ---------------------------------------------------------------- 1. files outside the gallery


def test_import_refuses_image_paths_outside_its_folder(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    folder = tmp_path / "imports"
    folder.mkdir()
    store = Store(tmp_path / "db.sqlite")
    cases = [
        ("itercomp", {"prompt": "a cat", "image_a": str(secret), "image_b": "b.png", "rank": [1, 2]}),
        ("itercomp", {"prompt": "a cat", "image_a": "../secret.txt", "image_b": "b.png", "rank": [1, 2]}),
        ("imagereward", {"prompt": "a dog", "generations": ["a.png", "x/../../secret.txt"], "ranking": [1, 2]}),
    ]
    for fmt, entry in cases:
        path = folder / "rankings.json"
        path.write_text(json.dumps([entry]))
        with pytest.raises(ItercompError, match="is outside the images folder .* --images-root"):
            import_file(store, path, fmt, "attribute_binding")
    assert store.task_ids() == [] and store.annotator_names() == []
    # The CLI says the same on one line.
    assert main(["annotate", "import", str(path), "--format", "imagereward", "--aspect", "attribute_binding",
                 "--db", str(tmp_path / "db.sqlite")]) == 2  # fmt: skip


def test_gallery_manifest_paths_stay_inside_the_run(tmp_path):
    records = make_toy_gallery(tmp_path / "run", prompts_per_aspect=1)
    rows = [r.to_dict() for r in records]
    rows[0]["path"] = "../../etc/passwd"
    write_jsonl(tmp_path / "run" / "manifest.jsonl", rows)
    with pytest.raises(ItercompError, match="'../../etc/passwd' is outside the images folder"):
        tasks_from_gallery(tmp_path / "run")


def test_server_never_serves_a_file_outside_the_gallery(live):
    """A task stored before paths were checked (or written into the database by hand) still cannot leak files."""
    server, store, root = live
    (root / "outside.txt").write_text("root:x:0:0:secret")
    with server.client() as client:
        api_login(client, "carol")
        task = client.get("/api/tasks/next").json()["task"]
        spec = store.task(task["task_id"])
        hacked = [c.to_dict() for c in spec.candidates]
        for candidate in hacked:
            candidate["path"] = "../outside.txt"
        with store.engine.begin() as conn:
            conn.execute(tasks.update().where(tasks.c.id == task["task_id"]).values(candidates=hacked))
        store._task_cache.clear()
        try:
            response = client.get(task["candidates"][0]["url"])
            assert response.status_code == 404 and "not available" in response.json()["error"]
            assert "secret" not in response.text and "outside" not in response.text
        finally:
            with store.engine.begin() as conn:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id == task["task_id"])
                    .values(candidates=[c.to_dict() for c in spec.candidates])
                )
            store._task_cache.clear()


# ---------------------------------------------------------------- 2. a password reset ends every session


def test_password_reset_ends_page_and_api_sessions_at_once(live):
    server, store, _ = live
    store.add_user("erin", PASSWORD)
    with server.client() as api, server.client() as page:
        api_login(api, "erin")
        assert page_login(page, "erin").status_code == 200
        assert page.get("/config").status_code == 200
        assert api.get("/api/progress").status_code == 200
        store.add_user("erin", "another long password", replace=True)
        # No grace period: the very next request of each is refused.
        assert page.get("/config").status_code == 401
        response = api.get("/api/progress")
        assert response.status_code == 401 and "log in again" in response.json()["error"]
        assert page_login(page, "erin", "another long password").status_code == 200
        assert page.get("/config").status_code == 200


# ---------------------------------------------------------------- 3. guessing and enumeration


def test_failed_logins_are_limited_per_name_and_per_address(guarded):
    with guarded.client() as client:
        for _ in range(3):  # the name's limit
            assert client.post("/api/login", json={"username": "dave", "password": "guess-guess"}).status_code == 401
        response = client.post("/api/login", json={"username": "dave", "password": PASSWORD})
        assert response.status_code == 429 and "too many failed logins" in response.json()["error"]
        assert 0 < int(response.headers["Retry-After"]) <= 15 * 60
        # The page's login form refuses too, with the right password, and says why and when to retry ...
        response = page_login(client, "dave")
        assert response.status_code == 429 and 0 < int(response.headers["Retry-After"]) <= 15 * 60
        assert re.fullmatch(LIMIT_MESSAGE, response.json()["detail"]), response.json()
        # ... while a wrong password under the limit is still just that.
        wrong = page_login(client, "bob", "guess-guess")
        assert wrong.status_code == 400 and wrong.json()["detail"] == "Incorrect credentials."
        # The login page carries the script that shows the limit's answer (Gradio's form shows none of its own).
        assert 'note.id = "login-limit"' in client.get("/").text
        assert client.get("/config").status_code == 401
        # Other names from the same address still log in (4 failures of the address's 6 so far) ...
        api_login(client, "bob")
        # ... until guesses at names that do not exist fill the address's limit.
        for ghost in ("ghost1", "ghost2"):
            assert client.post("/api/login", json={"username": ghost, "password": "guess-guess"}).status_code == 401
        response = client.post("/api/login", json={"username": "bob", "password": PASSWORD})
        assert response.status_code == 429 and response.headers["Retry-After"]
        response = page_login(client, "bob")  # the page's form counts the same address
        assert response.status_code == 429 and re.fullmatch(LIMIT_MESSAGE, response.json()["detail"])


def test_unknown_names_cost_a_full_password_hash(tmp_path, monkeypatch):
    store = Store(tmp_path / "db.sqlite")
    store.add_user("alice", PASSWORD)
    store.ensure_annotator("sim-1", "simulated")
    calls = []
    real = passwords.hashlib.pbkdf2_hmac

    def counting(name, password, salt, iterations):
        calls.append(iterations)
        return real(name, password, salt, iterations)

    monkeypatch.setattr(passwords.hashlib, "pbkdf2_hmac", counting)
    for name in ("alice", "nobody", "sim-1"):
        calls.clear()
        assert not store.check_password(name, "wrong password")
        assert calls == [passwords.ITERATIONS], name  # the same work, whether or not the name exists


def test_passwords_need_ten_characters(tmp_path, capsys, monkeypatch):
    store = Store(tmp_path / "db.sqlite")
    with pytest.raises(ItercompError, match="at least 10 characters"):
        store.add_user("alice", "short-pw")
    store.add_user("alice", PASSWORD)
    with pytest.raises(ItercompError, match="at least 10 characters"):
        store.add_user("alice", "123456789", replace=True)
    assert store.check_password("alice", PASSWORD)
    monkeypatch.setenv("ITERCOMP_PASSWORD", "hunter22")
    db = str(tmp_path / "db.sqlite")
    assert main(["annotate", "add-user", "bob", "--db", db]) == 2
    assert main(["annotate", "add-user", "alice", "--db", db, "--reset"]) == 2
    assert "at least 10 characters (this one has 8)" in capsys.readouterr().err
    assert store.annotator("bob") is None and store.check_password("alice", PASSWORD)


# ---------------------------------------------------------------- 4. expiry and logout


def test_tokens_expire_and_log_out(live):
    server, store, _ = live
    with server.client() as client:
        answer = api_login(client, "alice")
        assert answer["expires_in"] == 12 * 3600  # the default lifetime
        assert client.get("/api/progress").status_code == 200
        assert client.post("/api/logout").json() == {"logged_out": True}
        assert client.get("/api/progress").status_code == 401
        assert client.post("/api/logout").status_code == 401

        api_login(client, "alice")
        with store.engine.begin() as conn:  # a token issued 13 hours ago
            conn.execute(api_tokens.update().where(api_tokens.c.annotator == "alice").values(created_at="2000-01-01"))
        response = client.get("/api/progress")
        assert response.status_code == 401 and "expired" in response.json()["error"]

    with server.client() as page:
        assert page_login(page, "alice").status_code == 200
        assert page.get("/config").status_code == 200
        assert page.get("/logout").status_code == 302
        assert page.get("/config").status_code == 401
    with pytest.raises(ItercompError, match="token_hours must be > 0"):
        AppConfig(token_hours=0)


# ---------------------------------------------------------------- 5. hostile JSON and numbers


def test_hostile_bodies_and_numbers_get_4xx(live):
    server, store, _ = live
    before = store.count_rankings()
    with server.client() as client:
        api_login(client, "root")
        task = client.get("/api/tasks/next").json()["task"]
        base = {"submission_key": task["submission_key"], "prompt_id": task["prompt_id"], "aspect": task["aspect"]}
        head = json.dumps(base)[:-1]
        bodies = [
            (head + ', "order": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
            (head + ', "order": ' + "[" * 40 + "]" * 40 + "}", "nested too deeply"),
            (head + ', "order": [], "seconds_spent": 1' + "0" * 5000 + "}", "number too long"),
            ('{"username": "alice", "password": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
        ]
        for body, needle in bodies:
            for path in ("/api/rankings", "/api/login"):
                response = client.post(path, content=body, headers={"content-type": "application/json"})
                assert response.status_code == 400, (path, response.text[:200])
                assert needle in response.json()["error"]
        huge = "9" * 30
        response = client.get(f"/api/images/{huge}/x")
        assert response.status_code == 404 and "error" in response.json()
        response = client.get(f"/api/export?round={huge}")
        assert response.status_code == 422 and "round must be an integer" in response.json()["error"]
        response = client.post("/api/rankings", json={**base, "order": [10**4000], "seconds_spent": 10**300})
        assert response.status_code == 422
    assert store.count_rankings() == before


def test_prompts_are_shown_as_text_not_markup():
    """A prompt from an imported file is shown literally: no element comes out of it (an image fetched from any
    URL, a link, a style), rendered as CommonMark renders the ranking page's Markdown."""
    from markdown_it import MarkdownIt

    hostile = (
        '<img src=x onerror="fetch(`//evil.example`)"> ![t](http://evil.example/t.png) [x](javascript:alert(1)) '
        "<style>*{display:none}</style> **bold** & more"
    )
    html = MarkdownIt("commonmark").render(prompt_heading(hostile))
    assert html.count("<") == 2 and html.startswith("<h2>") and html.rstrip().endswith("</h2>")  # the heading only
    assert "&lt;img src=x onerror=" in html and "**bold** &amp; more" in html  # the text itself, escaped


# ---------------------------------------------------------------- 6. blind ranking


def test_ranking_is_blind_and_still_stores_the_real_images(live):
    server, store, root = live
    manifest = read_jsonl(root / "gallery" / "manifest.jsonl")
    tell_tales = [*TOY_GENERATORS, *(r["image_id"] for r in manifest), *(r["path"] for r in manifest)]
    with server.client() as client:
        api_login(client, "bob")
        task = client.get("/api/tasks/next").json()["task"]
        served = json.dumps(task)
        assert not [t for t in tell_tales if t in served], served
        for candidate in task["candidates"]:
            image = client.get(candidate["url"])
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert not [t for t in tell_tales if t.encode() in image.content]
            with Image.open(io.BytesIO(image.content)) as decoded:
                assert decoded.text == {} and decoded.size == (32, 32)
        # The page's file route serves no gallery file either (the manifest names every image's generator).
        assert page_login(client, "bob").status_code == 200
        assert client.get("/config").status_code == 200
        for name in ("manifest.jsonl", manifest[0]["path"]):
            response = client.get(f"/gradio_api/file={root / 'gallery' / name}")
            assert response.status_code == 403, name
            assert b'"generator"' not in response.content and b"PNG" not in response.content

        # The served order, submitted in blind ids, is stored as the real image ids (exports name the members).
        served_order = [c["image_id"] for c in task["candidates"]]
        body = {**{k: task[k] for k in ("submission_key", "prompt_id", "aspect")}, "order": served_order[::-1]}
        response = client.post("/api/rankings", json=body)
        assert response.status_code == 201, response.text
        stored = next(s for s in store.stored_rankings() if s.id == response.json()["ranking_id"])
        assert stored.ranking.order == stored.ranking.shown_order[::-1]
        assert {c.generator for c in stored.ranking.candidates} == set(TOY_GENERATORS)
        assert all(i in {r["image_id"] for r in manifest} for i in stored.ranking.order)
        # Real image ids are refused, and the refusal names the task's candidates by their blind ids only.
        other = client.get("/api/tasks/next").json()["task"]
        real = store.task(other["task_id"]).candidate_ids
        body = {**{k: other[k] for k in ("submission_key", "prompt_id", "aspect")}, "order": real}
        error = client.post("/api/rankings", json=body).json()["error"]
        assert "unknown candidate id" in error
        listed = error.split("this task's candidates are ")[1]
        assert set(listed.split(", ")) == {c["image_id"] for c in other["candidates"]}


# ---------------------------------------------------------------- 7. mistyped databases, half-written imports


def test_read_only_commands_refuse_a_missing_database(tmp_path, capsys):
    typo = tmp_path / "typo.sqlite"
    assert main(["annotate", "stats", "--db", str(typo)]) == 2
    assert main(["annotate", "export", "--db", str(typo), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count(f"no annotation database at {typo}: check --db") == 2
    assert not typo.exists() and not (tmp_path / "out").exists()
    with pytest.raises(ItercompError, match="no annotation database"):
        Store(typo, create=False)
    Store(typo)  # commands that write create it
    assert Store(typo, create=False).count_rankings() == 0


def test_refused_or_empty_import_writes_nothing(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ItercompError, match="holds no rankings"):
        import_file(store, tmp_path / "empty.json", "itercomp", "attribute_binding", annotator="nobody-import")
    assert store.annotator_names() == []

    first = [{"prompt": "a cat", "image_a": "a.png", "image_b": "b.png", "rank": [1, 2]}]
    (tmp_path / "first.json").write_text(json.dumps(first))
    import_file(store, tmp_path / "first.json", "itercomp", "attribute_binding", annotator="first-import")
    before = (store.annotator_names(), store.task_ids(), store.count_rankings())
    # A new prompt, then the known prompt with other images: refused as a whole, the new prompt included.
    second = [
        {"prompt": "a dog", "image_a": "a.png", "image_b": "b.png", "rank": [2, 1]},
        {"prompt": "a cat", "image_a": "a.png", "image_b": "b.png", "image_c": "c.png", "rank": [1, 2, 3]},
    ]
    (tmp_path / "second.json").write_text(json.dumps(second))
    with pytest.raises(ItercompError, match="nothing was imported"):
        import_file(store, tmp_path / "second.json", "itercomp", "attribute_binding", annotator="second-import")
    assert (store.annotator_names(), store.task_ids(), store.count_rankings()) == before


# ---------------------------------------------------------------- 8. private database files


def test_database_files_are_private(tmp_path):
    old = os.umask(0o022)  # the usual umask, under which SQLite creates files world-readable
    try:
        store = Store(tmp_path / "new.sqlite")
        store.add_user("alice", PASSWORD)
        files = [tmp_path / name for name in ("new.sqlite", "new.sqlite-wal", "new.sqlite-shm")]
        assert all(f.exists() for f in files)
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        os.umask(old)
