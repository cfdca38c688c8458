"""Configuration of the annotation server."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from annotation_app.guidelines import load_guidelines
from itercomp.errors import ItercompError

TASK_ASPECT_POLICIES = ("own", "all")


@dataclass
class AppConfig:
    db: str = field(default="sqlite:///annotations.sqlite", metadata={"help": "SQLAlchemy URL or a SQLite file path"})
    gallery_run: Path | None = field(default=None, metadata={"help": "gallery run folder with manifest.jsonl"})
    overlap: int = field(default=1, metadata={"help": "annotators per task (k); a task with k rankings is done"})
    task_aspects: str = field(
        default="own",
        metadata={
            "help": "'own': rank a prompt only for the aspect it was written for (IterComp's way); "
            "'all': rank every prompt for each of the three reward aspects"
        },
    )
    round: int = field(default=0, metadata={"help": "loop round the tasks belong to"})
    guidelines: Path | None = field(
        default=None,
        metadata={
            "help": "YAML file mapping each aspect to the guideline (Markdown) annotators read, or a shipped one by "
            "name (shapes, real_images); None: the shapes world's"
        },
    )
    # An issued task counts as taken by its annotator for this long (assignment spreads other annotators to
    # other tasks); the key itself never expires, so a slow annotator's ranking is still accepted.
    lease_seconds: float = 30 * 60
    # A ranking of 12 candidates is < 2 KB; anything near this limit is not a ranking.
    max_body_bytes: int = 64 * 1024
    title: str = "itercomp · rank images"
    token_hours: float = field(
        default=12.0,
        metadata={"help": "an API token or a ranking-page login lasts this long (a working day); then log in again"},
    )
    # Failed logins within `login_window_seconds` before further logins are refused: per annotator name (few:
    # guessing one account) and per client address (more: annotators behind one NAT share an address and mistype).
    login_failures_per_user: int = 5
    login_failures_per_address: int = 20
    login_window_seconds: float = 15 * 60

    @property
    def token_seconds(self) -> float:
        return self.token_hours * 3600

    def __post_init__(self):
        if self.overlap < 1:
            raise ItercompError(f"--overlap must be >= 1 (annotators per task), got {self.overlap}")
        if self.task_aspects not in TASK_ASPECT_POLICIES:
            raise ItercompError(f"--task-aspects must be one of {TASK_ASPECT_POLICIES}, got {self.task_aspects!r}")
        if not self.token_hours > 0:
            raise ItercompError(f"token_hours must be > 0 (how long a login lasts), got {self.token_hours}")
        for name in ("login_failures_per_user", "login_failures_per_address", "login_window_seconds"):
            if not getattr(self, name) > 0:
                raise ItercompError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.gallery_run is not None:
            self.gallery_run = Path(self.gallery_run)
        if self.guidelines is not None:
            self.guidelines = Path(self.guidelines)
        # Read and checked here, so that a bad file stops the server at start-up rather than at the first task.
        self.guideline_texts: dict[str, str] = load_guidelines(self.guidelines)
