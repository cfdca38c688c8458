"""The annotation app: annotators rank gallery images per prompt and aspect, safely, together.

- `annotation_app.store.Store`: the database (SQLite WAL or any SQLAlchemy URL): users, tasks, submission keys,
  rankings; idempotent submissions; assignment; progress.
- `annotation_app.tasks`: tasks from a gallery run's `manifest.jsonl`; `annotation_app.guidelines`: the text
  annotators read per aspect, from a YAML file (`load_guidelines`).
- `annotation_app.server.create_app`: FastAPI app with the JSON API and the Gradio UI mounted on it.
- `annotation_app.auth`: failed-login limits and page sessions kept in the store; `annotation_app.images`: images
  as annotators get them (pixels only, for blind ranking).
- `annotation_app.agreement`, `annotation_app.simulate`, `annotation_app.interchange`: statistics, simulated
  annotators, export to a Hugging Face dataset and `rankings.jsonl`, importers for IterComp and ImageReward files.
"""

from annotation_app.config import AppConfig
from annotation_app.store import Assignment, Store, SubmissionError, Submitted

__all__ = ["AppConfig", "Assignment", "Store", "SubmissionError", "Submitted"]
