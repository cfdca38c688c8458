"""The annotation store: users, tasks, assignment, idempotent submissions, concurrency (SQLite; PostgreSQL by URL)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from annotation_app.passwords import hash_password, verify_password
from annotation_app.store import Store, SubmissionError, check_order
from annotation_app.tasks import TaskSpec, aspects_for, tasks_from_gallery
from annotation_app.toy_gallery import make_toy_gallery
from itercomp.errors import ItercompError
from itercomp.io import read_jsonl, write_jsonl
from itercomp.records import Candidate, ImageRecord, Ranking

POSTGRES_ENV = "ITERCOMP_TEST_POSTGRES_URL"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    make_toy_gallery(root, prompts_per_aspect=3)
    return root


def _urls():
    urls = ["sqlite"]
    if os.environ.get(POSTGRES_ENV):
        urls.append(os.environ[POSTGRES_ENV])
    return urls


@pytest.fixture(params=_urls())
def store(request, tmp_path, gallery):
    if request.param == "sqlite":
        s = Store(tmp_path / "db.sqlite")
    else:  # a scratch PostgreSQL database: start from empty tables
        from annotation_app.store import metadata

        s = Store(request.param)
        metadata.drop_all(s.engine)
        metadata.create_all(s.engine)
    s.add_tasks(tasks_from_gallery(gallery))
    for name in ("alice", "bob", "carol"):
        s.ensure_annotator(name, "simulated")
    yield s
    s.close()


def test_password_hash_round_trip():
    stored = hash_password("s3cret", iterations=1000)
    assert stored.startswith("pbkdf2_sha256$1000$")
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret ", stored)
    assert not verify_password("s3cret", None)
    assert not verify_password("s3cret", "garbage")
    assert hash_password("same", 1000) != hash_password("same", 1000)  # salted


def test_users(store):
    store.add_user("dave", "pw-dave-long", admin=True)
    assert store.check_password("dave", "pw-dave-long")
    assert not store.check_password("dave", "pw-Dave-long")
    assert not store.check_password("nobody", "pw-dave-long")
    assert not store.check_password("alice", "")  # simulated annotators cannot log in
    with pytest.raises(ItercompError, match="exists already"):
        store.add_user("dave", "other-password")
    token = store.create_token("dave")
    assert store.user_for_token(token) == "dave"
    store.add_user("dave", "new-password", replace=True)
    assert store.user_for_token(token) is None  # a reset revokes API tokens
    assert store.check_password("dave", "new-password")
    with pytest.raises(ItercompError, match="not allowed"):
        store.add_user("bad name", "long-enough-pw")
    with pytest.raises(ItercompError, match="simulated annotator"):
        store.ensure_annotator("alice", "imported")


def test_tasks_from_gallery_policies(gallery, tmp_path):
    own = tasks_from_gallery(gallery)
    every = tasks_from_gallery(gallery, "all")
    assert len(own) == 9 and len(every) == 27  # 3 prompts x 3 aspects; x3 aspects each with "all"
    assert all(t.aspect == t.prompt_aspect for t in own)
    assert {t.aspect for t in every} == {"attribute_binding", "spatial_relationship", "non_spatial_relationship"}
    assert all(len(t.candidates) == 4 for t in own)
    assert aspects_for("complex") == () and len(aspects_for("complex", "all")) == 3

    # A missing image and a missing manifest are reported with what to do.
    records = [ImageRecord.from_dict(r) for r in read_jsonl(gallery / "manifest.jsonl")]
    broken = tmp_path / "broken"
    write_jsonl(broken / "manifest.jsonl", [r.to_dict() for r in records])
    with pytest.raises(ItercompError, match="is missing; re-run the gallery"):
        tasks_from_gallery(broken)
    with pytest.raises(ItercompError, match="no manifest.jsonl"):
        tasks_from_gallery(tmp_path / "nowhere")


def test_add_tasks_is_idempotent_and_refuses_changed_candidates(store, gallery):
    specs = tasks_from_gallery(gallery)
    assert store.add_tasks(specs) == (0, len(specs))
    changed = TaskSpec(specs[0].prompt_id, specs[0].prompt, specs[0].aspect, specs[0].candidates[:3])
    with pytest.raises(ItercompError, match="another --round"):
        store.add_tasks([changed])
    assert store.add_tasks([changed], round=1) == (1, 0)


def test_next_task_reuses_open_key_and_shuffles(store):
    first = store.next_task("alice", overlap=2)
    again = store.next_task("alice", overlap=2)
    assert again.key == first.key and again.shown_order == first.shown_order  # a reload shows the same page
    assert sorted(first.shown_order) == sorted(first.task.candidate_ids)
    keys = [store.next_task(n, overlap=3).key for n in ("alice", "bob", "carol")]
    assert len(set(keys)) == 3
    # Shown orders are shuffled: as permutations of the gallery order, ten hand-outs are not all the same.
    permutations = set()
    for i in range(10):
        store.ensure_annotator(f"viewer{i}", "simulated")
        a = store.next_task(f"viewer{i}", overlap=20)
        permutations.add(tuple(a.task.candidate_ids.index(x) for x in a.shown_order))
    assert len(permutations) > 1


def test_assignment_fewest_labels_first_and_overlap(store):
    n_tasks = len(store.task_ids(0))
    done_by = {}
    # alice ranks everything; then bob must get tasks that have 1 ranking, never one he has done.
    while (a := store.next_task("alice", overlap=2)) is not None:
        store.submit("alice", a.key, a.shown_order)
        done_by.setdefault(a.task_id, []).append("alice")
    assert len(done_by) == n_tasks
    seen = set()
    while (b := store.next_task("bob", overlap=2)) is not None:
        assert b.task_id not in seen
        seen.add(b.task_id)
        store.submit("bob", b.key, b.shown_order)
    assert len(seen) == n_tasks
    assert store.next_task("carol", overlap=2) is None  # every task has its 2 rankings
    c = store.next_task("carol", overlap=3)
    assert c is not None
    p = store.progress("bob", overlap=2)
    assert p["you_done"] == n_tasks and p["tasks_complete"] == n_tasks and p["towards_target"] == 2 * n_tasks


def test_fewest_labels_first_with_partial_progress(store):
    ids = store.task_ids(0)
    # Give the first two tasks one ranking each (by carol), then bob must start on an unranked task.
    for task_id in ids[:2]:
        a = store.issue_key("carol", task_id)
        store.submit("carol", a.key, a.shown_order)
    b = store.next_task("bob", overlap=3, lease_seconds=0)
    assert b.task_id not in ids[:2]


def test_submit_idempotent_and_conflicts(store):
    a = store.next_task("alice", overlap=2)
    order = list(reversed(a.shown_order))
    first = store.submit("alice", a.key, order, prompt_id=a.task.prompt_id, aspect=a.task.aspect, seconds_spent=3.5)
    assert not first.replay
    again = store.submit("alice", a.key, order, prompt_id=a.task.prompt_id, aspect=a.task.aspect)
    assert again.replay and again.ranking_id == first.ranking_id
    with pytest.raises(SubmissionError, match="already used with another order") as e:
        store.submit("alice", a.key, a.shown_order)
    assert e.value.status == 409
    # One ranking per annotator x prompt x aspect, whatever the key.
    second_key = store.issue_key("alice", a.task_id)
    with pytest.raises(SubmissionError, match="already ranked") as e:
        store.submit("alice", second_key.key, order)
    assert e.value.status == 409
    # Nobody submits under someone else's key.
    b = store.next_task("bob", overlap=2)
    with pytest.raises(SubmissionError, match="another annotator") as e:
        store.submit("alice", b.key, b.shown_order)
    assert e.value.status == 403
    stored = store.stored_rankings()
    assert len(stored) == 1
    r = stored[0].ranking
    assert r.order == order and r.annotator == "alice" and r.seconds_spent == 3.5 and r.shown_order == a.shown_order
    assert isinstance(r, Ranking) and Ranking.from_dict(r.to_dict()).order == order


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda o: o[:-1], "incomplete"),
        (lambda o: [o[0], *o[:-1]], "more than once"),
        (lambda o: [*o[:-1], "nope"], "unknown candidate id"),
        (lambda o: "a,b,c,d", "must be a list"),
        (lambda o: [1, 2, 3, 4], "must contain image ids"),
    ],
)
def test_invalid_orders_write_nothing(store, mutate, message):
    a = store.next_task("alice")
    with pytest.raises(SubmissionError, match=message) as e:
        store.submit("alice", a.key, mutate(list(a.shown_order)))
    assert e.value.status == 422
    assert store.count_rankings() == 0
    assert not store.submit("alice", a.key, a.shown_order).replay  # the key is still good


def test_wrong_task_fields_and_keys(store):
    a = store.next_task("alice")
    other = next(x for x in ("attribute_binding", "spatial_relationship") if x != a.task.aspect)
    with pytest.raises(SubmissionError, match="wrong aspect"):
        store.submit("alice", a.key, a.shown_order, aspect=other)
    with pytest.raises(SubmissionError, match="does not match"):
        store.submit("alice", a.key, a.shown_order, prompt_id="p0000000000")
    with pytest.raises(SubmissionError, match="unknown submission_key"):
        store.submit("alice", "made-up", a.shown_order)
    with pytest.raises(SubmissionError, match="seconds_spent"):
        store.submit("alice", a.key, a.shown_order, seconds_spent=-1)
    with pytest.raises(SubmissionError, match="unknown annotator"):
        store.next_task("mallory")
    assert store.count_rankings() == 0


def test_check_order_messages():
    with pytest.raises(SubmissionError, match="a, b have no rank"):
        check_order(["c"], ["a", "b", "c"])
    check_order(["b", "a"], ["a", "b"])


def test_ties_skip_pairs(store):
    a = store.next_task("alice")
    store.submit("alice", a.key, a.shown_order, ranks=[1, 2, 2, 3])
    stored = store.stored_rankings()[0]
    assert stored.ranks == [1, 2, 2, 3]
    pairs = stored.pairs()
    assert len(pairs) == 5 and (a.shown_order[1], a.shown_order[2]) not in pairs
    with pytest.raises(SubmissionError, match="must not decrease"):
        b = store.next_task("bob")
        store.submit("bob", b.key, b.shown_order, ranks=[2, 1, 3, 4])


def test_concurrent_writers_from_separate_engines(store, tmp_path):
    """Separate engines behave like separate processes: no 'database is locked', nothing lost or doubled."""
    names = [f"w{i}" for i in range(8)]
    for name in names:
        store.ensure_annotator(name, "simulated")
    errors, done = [], []
    lock = threading.Lock()

    def work(name):
        own = Store(store.url)  # its own connection pool
        try:
            while (a := own.next_task(name, overlap=8, lease_seconds=0)) is not None:
                own.submit(name, a.key, a.shown_order)
                own.submit(name, a.key, a.shown_order)  # a retry
                with lock:
                    done.append((name, a.task_id))
        except Exception as e:  # noqa: BLE001 - collected and asserted on below
            errors.append(repr(e))
        finally:
            own.close()

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(work, names))
    assert errors == []
    n_tasks = len(store.task_ids(0))
    assert len(done) == len(set(done)) == len(names) * n_tasks
    assert store.count_rankings() == len(names) * n_tasks
    assert store.progress(None, overlap=8)["tasks_complete"] == n_tasks


def test_candidate_paths_resolve(store, gallery):
    spec = store.task(store.task_ids(0)[0])
    assert all(spec.image_path(c.image_id).is_file() for c in spec.candidates)
    assert isinstance(spec.candidates[0], Candidate)
