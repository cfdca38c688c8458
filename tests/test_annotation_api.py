"""The JSON API: authentication, validation messages (4xx, nothing written), idempotency, progress, export."""

from __future__ import annotations

import json

import pytest
from annotation_helpers import LiveServer

from annotation_app.config import AppConfig
from annotation_app.store import Store
from annotation_app.toy_gallery import make_toy_gallery


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    make_toy_gallery(root / "gallery", prompts_per_aspect=2)
    store = Store(root / "db.sqlite")
    store.add_user("alice", "alice-password")
    store.add_user("bob", "bob-password")
    store.add_user("root", "root-password", admin=True)
    server = LiveServer(store, AppConfig(db=store.url, gallery_run=root / "gallery", overlap=2, max_body_bytes=4096))
    yield server, store
    server.stop()


def login(client, name, password):
    response = client.post("/api/login", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    client.headers["Authorization"] = f"Bearer {response.json()['token']}"
    return client


def body_of(task, order=None):
    return {
        "submission_key": task["submission_key"],
        "prompt_id": task["prompt_id"],
        "aspect": task["aspect"],
        "order": order if order is not None else [c["image_id"] for c in task["candidates"]],
    }


def test_unauthenticated_and_bad_login(live):
    server, store = live
    with server.client() as client:
        for method, path in [("get", "/api/progress"), ("get", "/api/tasks/next"), ("post", "/api/rankings")]:
            response = getattr(client, method)(path)
            assert response.status_code == 401 and "POST /api/login" in response.json()["error"]
        response = client.get("/api/progress", headers={"Authorization": "Bearer not-a-token"})
        assert response.status_code == 401 and "log in again" in response.json()["error"]
        response = client.post("/api/login", json={"username": "alice", "password": "nope"})
        assert response.status_code == 401 and response.json()["error"] == "wrong username or password"
        assert client.post("/api/login", json={"username": "alice"}).status_code == 422
        # The UI and its images are behind the login too.
        assert client.get("/config").status_code == 401


def test_validation_messages_write_nothing(live):
    server, store = live
    before = store.count_rankings()
    with server.client() as client:
        login(client, "alice", "alice-password")
        task = client.get("/api/tasks/next").json()["task"]
        assert task["guideline"] and len(task["candidates"]) == 4
        image = client.get(task["candidates"][0]["url"])
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        assert client.get(f"/api/images/{task['task_id']}/nope").status_code == 404
        assert client.get(task["candidates"][0]["url"], headers={"Authorization": ""}).status_code == 401
        good = body_of(task)
        ids = good["order"]
        other_aspect = next(a for a in ("attribute_binding", "spatial_relationship") if a != task["aspect"])
        cases = [
            ({**good, "order": ids[:-1]}, 422, "incomplete"),
            ({**good, "order": [ids[0], *ids[:-1]]}, 422, "more than once"),
            ({**good, "order": [*ids[:-1], "image-from-elsewhere"]}, 422, "unknown candidate id"),
            ({**good, "aspect": other_aspect}, 422, "wrong aspect"),
            ({**good, "extra": 1}, 422, "unknown field(s) extra"),
            ({k: v for k, v in good.items() if k != "order"}, 422, "missing field(s) order"),
            ({**good, "submission_key": "forged"}, 422, "unknown submission_key"),
            ({**good, "seconds_spent": "long"}, 422, "seconds_spent"),
        ]
        for payload, status, needle in cases:
            response = client.post("/api/rankings", json=payload)
            assert response.status_code == status, (payload, response.text)
            assert needle in response.json()["error"], response.text
        raw = [
            (b"{not json", {"content-type": "application/json"}, 400, "malformed JSON"),
            (b"[1, 2]", {"content-type": "application/json"}, 400, "must be a JSON object"),
            (b"x" * 5000, {"content-type": "application/json"}, 413, "over the limit"),
            (b"order=a", {"content-type": "application/x-www-form-urlencoded"}, 415, "application/json"),
        ]
        for content, headers, status, needle in raw:
            response = client.post("/api/rankings", content=content, headers=headers)
            assert response.status_code == status and needle in response.json()["error"], response.text
        assert store.count_rankings() == before

        # The same key still works after all the refusals, and a retry is a replay.
        first = client.post("/api/rankings", json=good)
        assert first.status_code == 201 and first.json()["replay"] is False
        again = client.post("/api/rankings", json=good)
        assert again.status_code == 200 and again.json() == {"ranking_id": first.json()["ranking_id"], "replay": True}
        changed = client.post("/api/rankings", json={**good, "order": list(reversed(ids))})
        assert changed.status_code == 409 and "another order" in changed.json()["error"]
        assert store.count_rankings() == before + 1


def test_no_writing_as_someone_else(live):
    server, store = live
    with server.client() as alice, server.client() as bob:
        login(alice, "alice", "alice-password")
        login(bob, "bob", "bob-password")
        task = bob.get("/api/tasks/next").json()["task"]
        response = alice.post("/api/rankings", json=body_of(task))
        assert response.status_code == 403 and "another annotator" in response.json()["error"]
        assert bob.post("/api/rankings", json=body_of(task)).status_code == 201


def test_progress_and_export(live):
    server, store = live
    with server.client() as client:
        login(client, "bob", "bob-password")
        progress = client.get("/api/progress").json()
        assert progress["you_done"] >= 1 and progress["target"] == 2 * progress["tasks"]
        response = client.get("/api/export")
        assert response.status_code == 403 and "admins" in response.json()["error"]
        login(client, "root", "root-password")
        response = client.get("/api/export")
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert len(lines) == store.count_rankings()
        assert {"prompt_id", "aspect", "candidates", "order", "annotator", "ranking_id"} <= set(lines[0])
        assert client.get("/api/export?kinds=robots").status_code == 422


def test_drains_to_nothing_left(live):
    server, store = live
    with server.client() as client:
        login(client, "alice", "alice-password")
        for _ in range(100):
            task = client.get("/api/tasks/next").json()["task"]
            if task is None:
                break
            assert client.post("/api/rankings", json=body_of(task)).status_code == 201
        assert client.get("/api/tasks/next").json() == {
            "task": None,
            "message": "nothing left for you to rank in this round",
        }
        assert client.get("/api/progress").json()["you_done"] == len(store.task_ids(0))
