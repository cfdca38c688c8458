"""Human annotators in the loop: tell people where to rank, optionally serve the app and wait, or stop cleanly.

A run in human mode stops at a round's rankings stage until the round's store holds the target number of
rankings. With `human_wait_minutes: 0` (the default) it exits at once with a message naming the commands
(`itercomp annotate add-user`, `itercomp annotate serve`) and how to pick up (`itercomp iterate --resume`); with a
waiting time it serves the ranking app from this process and polls the store until the target is reached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from itercomp.errors import ItercompError

POLL_SECONDS = 5.0
EXIT_WAITING = 3  # exit code of `itercomp iterate` while it waits for rankings (2 is a user error)


class WaitingForRankings(ItercompError):
    """Not an error in the run: the round needs more human rankings; the message says how to get them."""


def needed(progress: dict, target: int | None) -> int:
    """The number of rankings to wait for: `target`, or every task at the overlap; refused if unreachable."""
    if target is None:
        return progress["target"]
    if target > progress["target"]:
        raise ItercompError(
            f"--target_rankings {target} is more than round {progress['round']} can get: {progress['tasks']} tasks x "
            f"overlap {progress['overlap']} = {progress['target']}; lower it or raise --overlap"
        )
    return target


def waiting_message(progress: dict, need: int, db: str, resume_command: str, guidelines: str | None = None) -> str:
    k, overlap = progress["round"], progress["overlap"]
    guide = f" --guidelines {guidelines}" if guidelines else ""
    return (
        f"round {k} needs {need} human rankings ({progress['tasks']} tasks, overlap {overlap}); "
        f"{progress['towards_target']} so far in {db}. Add annotators once with "
        f"`itercomp annotate add-user NAME --db {db}`, serve the ranking page with "
        f"`itercomp annotate serve --db {db} --round {k} --overlap {overlap}{guide}`, then continue with "
        f"`{resume_command}` (finished stages are kept)"
    )


def serve_in_background(
    db: str, round: int, overlap: int, host: str, port: int, guidelines: str | None = None
) -> Callable[[], None]:
    """Start the annotation app (FastAPI + Gradio) in a thread; returns the function that stops it. `guidelines`:
    a guidelines file or shipped name (annotation_app.guidelines), None for the shapes world's."""
    import uvicorn

    from annotation_app.config import AppConfig
    from annotation_app.server import create_app

    app = create_app(AppConfig(db=db, round=round, overlap=overlap, guidelines=guidelines))
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="annotation-app", daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return stop


def wait_for_rankings(
    progress_fn: Callable[[], dict],
    need: int,
    minutes: float,
    message: Callable[[dict], str],
    poll_seconds: float = POLL_SECONDS,
) -> dict:
    """Poll until `need` rankings are in or `minutes` pass; returns the progress, or raises WaitingForRankings."""
    from tqdm import tqdm

    progress = progress_fn()
    if progress["towards_target"] >= need:
        return progress
    if minutes <= 0:
        raise WaitingForRankings(message(progress))
    deadline = time.monotonic() + minutes * 60
    bar = tqdm(total=need, initial=progress["towards_target"], desc="human rankings", unit="ranking")
    try:
        while progress["towards_target"] < need:
            if time.monotonic() >= deadline:
                raise WaitingForRankings(message(progress))
            time.sleep(poll_seconds)
            progress = progress_fn()
            bar.n = min(progress["towards_target"], need)
            bar.refresh()
    finally:
        bar.close()
    return progress
