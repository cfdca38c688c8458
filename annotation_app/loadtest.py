"""The HTTP load scenario behind tests/test_annotation_load.py and bench/annotation_load.py.

N clients (threads, one httpx client and one annotator each) each fetch and submit M rankings through the JSON
API of a real server (uvicorn in a subprocess by default). Mixed in: retries of the same submission key after a
"lost" response, the same key sent twice at the same moment, and invalid submissions that must be refused.
Afterwards the database is compared with what the clients sent: lost (acknowledged but not stored), duplicated
(stored more than once, or stored without being sent) and mismatched (stored differently from what was sent).
"""

from __future__ import annotations

import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from annotation_app.store import Store
from annotation_app.toy_gallery import make_toy_gallery

PASSWORD = "load-test-password"
OUTAGE_SECONDS = 120.0  # how long clients keep re-sending while the server is unreachable


@dataclass
class LoadConfig:
    clients: int = 20
    submissions: int = 100  # per client
    retry_rate: float = 0.15  # share of submissions re-sent with the same key after a "lost" response
    race_rate: float = 0.05  # share sent twice at the same moment
    invalid_rate: float = 0.05  # share preceded by an invalid submission that must be refused
    seed: int = 0
    server: str = "subprocess"  # or "thread" (uvicorn in this process)
    # "all": each prompt gives one task per aspect, so 100 tasks need only 34 prompts to draw
    task_aspects: str = "all"
    db: str | None = None  # SQLAlchemy URL; default a SQLite file in the work folder
    # Kill the server with SIGKILL this many seconds into the run and start it again (subprocess server only):
    # clients re-send what got no answer, and nothing acknowledged may be missing afterwards.
    crash_after: float | None = None


@dataclass
class ClientLog:
    sent: dict = field(default_factory=dict)  # key -> (annotator, prompt_id, aspect, order, ranking_id)
    requests: int = 0
    retries: int = 0
    races: int = 0
    invalid_refused: int = 0
    transport_retries: int = 0  # requests repeated after a connection error (the server was down)
    replayed_after_outage: int = 0  # stored before the crash, answer lost, answered by a replay when re-sent
    errors: list = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`itercomp annotate serve` in a subprocess, or uvicorn in a thread of this process."""

    def __init__(self, db: str, gallery: Path, overlap: int, mode: str, log: Path, task_aspects: str = "own"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = mode
        self.restarts = 0
        if mode == "subprocess":
            self.command = [
                sys.executable, "-m", "itercomp.cli", "annotate", "serve", "--db", db, "--gallery-run", str(gallery),
                "--overlap", str(overlap), "--port", str(self.port), "--task-aspects", task_aspects,
            ]  # fmt: skip
            self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
            self._spawn()
        else:
            import uvicorn

            from annotation_app.config import AppConfig
            from annotation_app.server import create_app

            app = create_app(AppConfig(db=db, gallery_run=gallery, overlap=overlap, task_aspects=task_aspects))
            self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
            self.thread = threading.Thread(target=self.server.run, daemon=True)
            self.thread.start()
        self.wait()

    def _spawn(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def crash_and_restart(self) -> float:
        """SIGKILL the server (no shutdown, no flush) and start it again on the same port; returns the outage."""
        if self.mode != "subprocess":
            raise RuntimeError("only a subprocess server can be killed")
        start = time.perf_counter()
        self.cpu_before_restart = (self.cpu_before_restart or 0.0) + (self.cpu_seconds() or 0.0)
        self.process.kill()
        self.process.wait()
        self.restarts += 1
        self._spawn()
        self.wait()
        return time.perf_counter() - start

    cpu_before_restart: float | None = None

    def wait(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.mode == "subprocess" and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/api/progress", timeout=2).status_code == 401:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not answer on {self.url} within {timeout:.0f} s")

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used so far (Linux /proc; None elsewhere or in thread mode)."""
        if self.mode != "subprocess":
            return None
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.mode == "subprocess":
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.log.close()
        else:
            self.server.should_exit = True
            self.thread.join(timeout=20)


def _call(client: httpx.Client, method: str, path: str, log: ClientLog, **kwargs) -> tuple[httpx.Response, bool]:
    """One request, repeated unchanged on connection errors until the server answers (what a real client does:
    for a POST that means the same submission key again). Returns the answer and whether it had to repeat."""
    deadline, repeated = time.time() + OUTAGE_SECONDS, False
    while True:
        log.requests += 1
        try:
            return client.request(method, path, **kwargs), repeated
        except httpx.TransportError as e:
            if time.time() > deadline:
                raise RuntimeError(f"server unreachable for {OUTAGE_SECONDS} s: {e!r}") from e
            log.transport_retries += 1
            repeated = True
            time.sleep(0.2)


def _post(client: httpx.Client, body: dict, log: ClientLog) -> tuple[httpx.Response, bool]:
    return _call(client, "POST", "/api/rankings", log, json=body)


def _invalid(task: dict, order: list[str], rng: random.Random) -> tuple[dict, str]:
    body = {"submission_key": task["submission_key"], "prompt_id": task["prompt_id"], "aspect": task["aspect"]}
    kind = rng.choice(["incomplete", "duplicate", "unknown", "aspect", "field"])
    if kind == "incomplete":
        return {**body, "order": order[:-1]}, kind
    if kind == "duplicate":
        return {**body, "order": [order[0], *order[:-1]]}, kind
    if kind == "unknown":
        return {**body, "order": [*order[:-1], "no-such-image"]}, kind
    if kind == "aspect":
        other = "attribute_binding" if task["aspect"] != "attribute_binding" else "spatial_relationship"
        return {**body, "aspect": other, "order": order}, kind
    return {**body, "order": order, "ranks": [1, 2]}, kind


def run_client(url: str, name: str, config: LoadConfig, index: int) -> ClientLog:
    log = ClientLog()
    rng = random.Random(f"{config.seed}-{index}")
    with httpx.Client(base_url=url, timeout=60) as client:
        login, _ = _call(client, "POST", "/api/login", log, json={"username": name, "password": PASSWORD})
        client.headers["Authorization"] = f"Bearer {login.json()['token']}"
        for _ in range(config.submissions):
            task = _call(client, "GET", "/api/tasks/next", log)[0].json()["task"]
            if task is None:
                log.errors.append("ran out of tasks")
                break
            order = [c["image_id"] for c in task["candidates"]]
            rng.shuffle(order)
            if rng.random() < config.invalid_rate:
                bad, kind = _invalid(task, order, rng)
                response, _ = _post(client, bad, log)
                if response.status_code in (400, 409, 413, 422) and response.json().get("error"):
                    log.invalid_refused += 1
                else:
                    log.errors.append(f"invalid ({kind}) answered {response.status_code}: {response.text[:200]}")
            body = {
                "submission_key": task["submission_key"], "prompt_id": task["prompt_id"], "aspect": task["aspect"],
                "order": order,
            }  # fmt: skip
            if rng.random() < config.race_rate:
                # The same key twice at the same moment: exactly one insert, the other a replay of it.
                log.races += 1
                with ThreadPoolExecutor(2) as pool:
                    (first, r1), (second, r2) = pool.map(lambda b: _post(client, b, log), [body, body])
                codes = sorted([first.status_code, second.status_code])
                ids = {first.json().get("ranking_id"), second.json().get("ranking_id")}
                # After a connection error both may be replays of an insert whose answer was lost.
                expected = codes == [200, 201] or ((r1 or r2) and set(codes) <= {200, 201})
                if not expected or len(ids) != 1:
                    log.errors.append(f"race answered {codes} with ids {ids}")
                response = first
            else:
                response, repeated = _post(client, body, log)
                if response.status_code != 201 and not (repeated and response.status_code == 200):
                    log.errors.append(f"submit answered {response.status_code}: {response.text[:200]}")
                    continue
                log.replayed_after_outage += repeated and response.status_code == 200
            ranking_id = response.json()["ranking_id"]
            if rng.random() < config.retry_rate:
                # The response "got lost": the client sends the same key again and must get the same ranking back.
                log.retries += 1
                again, _ = _post(client, body, log)
                if again.status_code != 200 or again.json() != {"ranking_id": ranking_id, "replay": True}:
                    log.errors.append(f"retry answered {again.status_code}: {again.text[:200]}")
            log.sent[task["submission_key"]] = (name, task["prompt_id"], task["aspect"], order, ranking_id)
    return log


def run_load(workdir: str | Path, config: LoadConfig | None = None) -> dict:
    """Run the scenario in `workdir`; returns the figures (also what the benchmark writes)."""
    config = config or LoadConfig()
    workdir = Path(workdir)
    gallery = workdir / "gallery"
    # Every client ranks `submissions` different tasks, and every task may be ranked by every client.
    if config.task_aspects == "all":
        make_toy_gallery(gallery, math.ceil(config.submissions / 3) + 1, aspects=("spatial_relationship",))
    else:
        make_toy_gallery(gallery, math.ceil(config.submissions / 3) + 1)
    db = config.db or f"sqlite:///{(workdir / 'load.sqlite').resolve()}"
    store = Store(db)
    names = [f"load-{i:02d}" for i in range(config.clients)]
    existing = set(store.annotator_names())
    for name in names:
        if name not in existing:
            store.add_user(name, PASSWORD)
    before = {s.submission_key for s in store.stored_rankings()}
    server = Server(
        db, gallery, config.clients, config.server, workdir / "server.log", task_aspects=config.task_aspects
    )
    outage = None
    try:
        start, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(config.clients) as pool:
            futures = [pool.submit(run_client, server.url, names[i], config, i) for i in range(config.clients)]
            if config.crash_after is not None:
                time.sleep(config.crash_after)
                outage = server.crash_and_restart()
            logs = [f.result() for f in futures]
        seconds, client_cpu = time.perf_counter() - start, time.process_time() - cpu
        server_cpu = (server.cpu_seconds() or 0.0) + (server.cpu_before_restart or 0.0)
    finally:
        server.stop()

    sent = {key: value for log in logs for key, value in log.sent.items()}
    stored = [s for s in store.stored_rankings() if s.submission_key not in before]
    by_key: dict[str, list] = {}
    for s in stored:
        by_key.setdefault(s.submission_key, []).append(s)
    lost = sorted(set(sent) - set(by_key))
    duplicated = sum(len(rows) - 1 for rows in by_key.values()) + sum(1 for k in by_key if k not in sent)
    mismatched = []
    for key, (name, prompt_id, aspect, order, ranking_id) in sent.items():
        for s in by_key.get(key, []):
            r = s.ranking
            served = [store.slots(s.task_id)[i] for i in r.order]  # clients rank the blind ids they were served
            if (r.annotator, r.prompt_id, r.aspect, served, s.id) != (name, prompt_id, aspect, order, ranking_id):
                mismatched.append(key)
    pairs = [(s.ranking.annotator, s.task_id) for s in stored]
    requests = sum(log.requests for log in logs)
    store.close()
    return {
        "config": asdict(config),
        "expected": config.clients * config.submissions,
        "acknowledged": len(sent),
        "stored": len(stored),
        "lost": len(lost),
        "duplicated": duplicated,
        "duplicate_annotator_task": len(pairs) - len(set(pairs)),
        "mismatched": len(mismatched),
        "retries": sum(log.retries for log in logs),
        "races": sum(log.races for log in logs),
        "invalid_refused": sum(log.invalid_refused for log in logs),
        "server_restarts": server.restarts,
        "outage_seconds": round(outage, 1) if outage is not None else None,
        "transport_retries": sum(log.transport_retries for log in logs),
        "replayed_after_outage": sum(log.replayed_after_outage for log in logs),
        "errors": [e for log in logs for e in log.errors][:20],
        "seconds": round(seconds, 2),
        "client_cpu_seconds": round(client_cpu, 1),
        "server_cpu_seconds": round(server_cpu, 1) if config.server == "subprocess" else None,
        "submissions_per_s": round(len(sent) / seconds, 1),
        "requests": requests,
        "requests_per_s": round(requests / seconds, 1),
        "database": db.split("://")[0],
        "server": config.server,
        "cpu_count": os.cpu_count(),
    }
