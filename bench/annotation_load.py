"""Benchmark: the annotation server under concurrent annotators (the scenario of tests/test_annotation_load.py).

N client threads, each logged in as its own annotator, fetch a task and submit a ranking M times through the JSON
API of `itercomp annotate serve` (a subprocess), with retries of the same submission key, simultaneous duplicate
posts and invalid posts mixed in; then the database is compared with what was sent.

python bench/annotation_load.py --clients 20 --submissions 100 --out bench/results/annotation_load.json
python bench/annotation_load.py --crash-after 8 --out bench/results/annotation_load_crash.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from annotation_app.loadtest import LoadConfig, run_load
from itercomp.io import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--submissions", type=int, default=100, help="per client")
    parser.add_argument("--retry-rate", type=float, default=0.15)
    parser.add_argument("--race-rate", type=float, default=0.05)
    parser.add_argument("--invalid-rate", type=float, default=0.05)
    parser.add_argument("--server", choices=("subprocess", "thread"), default="subprocess")
    parser.add_argument("--db", help="SQLAlchemy URL (default: a fresh SQLite file); a PostgreSQL URL works too")
    parser.add_argument(
        "--crash-after", type=float, help="SIGKILL the server this many seconds in and restart it (durability check)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/annotation_load.json"))
    args = parser.parse_args()

    config = LoadConfig(
        clients=args.clients,
        submissions=args.submissions,
        retry_rate=args.retry_rate,
        race_rate=args.race_rate,
        invalid_rate=args.invalid_rate,
        server=args.server,
        db=args.db,
        crash_after=args.crash_after,
    )
    with tempfile.TemporaryDirectory(prefix="annotation-load-") as workdir:
        result = run_load(workdir, config)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()}
    write_json(args.out, result)
    print(
        f"{result['acknowledged']} submissions from {config.clients} clients in {result['seconds']} s: "
        f"{result['submissions_per_s']} submissions/s, {result['requests_per_s']} requests/s; "
        f"lost {result['lost']}, duplicated {result['duplicated']}, mismatched {result['mismatched']}; "
        f"{result['retries']} retries, {result['races']} simultaneous duplicates, "
        f"{result['invalid_refused']} invalid posts refused"
    )
    if result["server_restarts"]:
        print(
            f"server killed (SIGKILL) after {args.crash_after} s and restarted: outage {result['outage_seconds']} s, "
            f"{result['transport_retries']} requests re-sent, {result['replayed_after_outage']} rankings stored "
            "before the crash whose answer was lost came back as replays"
        )
    if result["errors"]:
        print("errors:", json.dumps(result["errors"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
