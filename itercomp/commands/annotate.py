"""`itercomp annotate ...`: the ranking app, its users, simulated annotators, agreement, export and import."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from itercomp.commands import subcommands
from itercomp.errors import ItercompError

DEFAULT_DB = "annotations.sqlite"
PASSWORD_ENV = "ITERCOMP_PASSWORD"
ASPECTS = ("attribute_binding", "spatial_relationship", "non_spatial_relationship")
KINDS = ("human", "simulated", "imported")


def _db(p) -> None:
    p.add_argument(
        "--db", default=DEFAULT_DB,
        help=f"SQLAlchemy URL (e.g. postgresql+psycopg://user:pass@host/db) or a SQLite file (default {DEFAULT_DB})",
    )  # fmt: skip


def _tasks(p) -> None:
    p.add_argument("--round", type=int, default=0, help="loop round the tasks belong to (default 0)")
    p.add_argument(
        "--task-aspects", choices=("own", "all"), default="own",
        help="'own' (default, as IterComp): rank each prompt only for the aspect it was written for; "
        "'all': rank every prompt for each of the three aspects",
    )  # fmt: skip


def _kinds(value: str) -> list[str]:
    kinds = [k for k in value.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ItercompError(f"--kinds takes a comma-separated subset of {', '.join(KINDS)}; got {', '.join(bad)}")
    return kinds


def register(parser) -> None:
    sub = subcommands(parser)

    p = sub.add_parser("serve", help="start the ranking web app (Gradio UI at /, JSON API at /api)")
    _db(p)
    p.add_argument("--gallery-run", type=Path, help="gallery run folder with manifest.jsonl; its tasks are loaded")
    _tasks(p)
    p.add_argument("--overlap", type=int, default=1, help="annotators per task, k (default 1)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--lease-minutes", type=float, default=30.0, help="how long a handed-out task counts as taken")
    p.add_argument(
        "--token-hours", type=float, default=12.0, help="how long a login (API token or page) lasts (default 12)"
    )
    p.add_argument(
        "--guidelines", metavar="FILE",
        help="the guideline (Markdown) annotators read per aspect: a YAML file mapping attribute_binding, "
        "spatial_relationship and non_spatial_relationship to their text, or a shipped one by name: shapes "
        "(default, the shapes world), real_images",
    )  # fmt: skip
    p.set_defaults(func=serve)

    # No abbreviations: `--password SECRET` must not be read as --password-file (a password never goes on argv).
    p = sub.add_parser(
        "add-user",
        allow_abbrev=False,
        help="add an annotator (password of >= 10 characters from a prompt, --password-file or $" + PASSWORD_ENV + ")",
    )
    p.add_argument("name")
    _db(p)
    p.add_argument("--password-file", type=Path, help="read the password from the first line of this file")
    p.add_argument("--admin", action="store_true", help="may export rankings through the API")
    p.add_argument("--reset", action="store_true", help="set a new password for an existing annotator")
    p.set_defaults(func=add_user)

    p = sub.add_parser("stats", help="per aspect: rankings, Kendall's tau between annotators, Krippendorff's alpha")
    _db(p)
    p.add_argument("--round", type=int, help="only this round (default: all)")
    p.add_argument("--kinds", type=_kinds, help="annotator kinds to include, e.g. human,simulated (default: all)")
    p.add_argument("--json", type=Path, help="also write the full report (per annotator pair) to this file")
    p.set_defaults(func=stats)

    p = sub.add_parser(
        "simulate", help="rank every task with simulated annotators (oracle score + Plackett-Luce noise)"
    )
    _db(p)
    p.add_argument("--gallery-run", type=Path, help="gallery run folder to load tasks from (optional if loaded)")
    _tasks(p)
    p.add_argument("--annotators", type=int, default=5, help="number of simulated annotators sim-1..sim-N (default 5)")
    p.add_argument("--temperature", type=float, default=0.05, help="noise: Plackett-Luce temperature (default 0.05)")
    p.add_argument("--overlap", type=int, default=2, help="rankings per task (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=simulate)

    p = sub.add_parser("export", help="write a Hugging Face dataset (rankings + pairs splits) and rankings.jsonl")
    _db(p)
    p.add_argument(
        "--output-dir", type=Path, required=True, deprecated=("--out",),
        help="output folder (datasets.load_from_disk(OUTPUT_DIR) reads it)",
    )  # fmt: skip
    p.add_argument("--round", type=int, help="only this round (default: all)")
    p.add_argument("--kinds", type=_kinds, help="annotator kinds to include, e.g. human (default: all)")
    p.add_argument(
        "--paths", choices=("absolute", "relative"), default="absolute", help="image paths (default absolute)"
    )
    p.set_defaults(func=export)

    p = sub.add_parser("import", help="import rankings from IterComp's or ImageReward's JSON into the database")
    p.add_argument("file", type=Path, help="JSON array or JSON lines")
    p.add_argument("--format", choices=("itercomp", "imagereward"), required=True)
    p.add_argument("--aspect", choices=ASPECTS, required=True, help="the aspect the file's rankings judge")
    _db(p)
    p.add_argument("--annotator", help="store the rankings under this name (default <format>-import)")
    p.add_argument("--images-root", type=Path, help="folder image paths are relative to (default: the file's folder)")
    p.add_argument("--round", type=int, default=0)
    p.set_defaults(func=import_)

    p = sub.add_parser(
        "toy-gallery", help="draw a small shapes-world gallery run (4 stand-in generators) to try the app"
    )
    p.add_argument("--output-dir", type=Path, required=True, deprecated=("--out",), help="output folder")
    p.add_argument("-n", type=int, default=4, help="prompts per aspect (default 4)")
    p.add_argument("--seeds", type=int, default=1, help="images per prompt and generator (default 1)")
    p.add_argument("--split", choices=("train", "val", "test"), default="train")
    p.set_defaults(func=toy_gallery)


def serve(args) -> None:
    from annotation_app.config import AppConfig
    from annotation_app.server import serve as run

    config = AppConfig(
        db=args.db, gallery_run=args.gallery_run, overlap=args.overlap, task_aspects=args.task_aspects,
        round=args.round, lease_seconds=args.lease_minutes * 60, token_hours=args.token_hours,
        guidelines=args.guidelines,
    )  # fmt: skip
    run(config, host=args.host, port=args.port)


def read_password(args) -> str:
    from annotation_app.passwords import check_password_strength

    if args.password_file is not None:
        if not args.password_file.is_file():
            raise ItercompError(f"password file not found: {args.password_file}")
        lines = args.password_file.read_text().splitlines()
        password = lines[0] if lines else ""
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise ItercompError("the two passwords differ; run the command again")
    else:
        raise ItercompError(f"no password: give --password-file FILE or set ${PASSWORD_ENV} (no terminal to ask on)")
    check_password_strength(password)
    return password


def add_user(args) -> None:
    from annotation_app.store import Store

    password = read_password(args)
    Store(args.db).add_user(args.name, password, admin=args.admin, replace=args.reset)
    print(f"{'reset' if args.reset else 'added'} annotator {args.name}{' (admin)' if args.admin else ''} in {args.db}")


def stats(args) -> None:
    from annotation_app.agreement import agreement, format_agreement
    from annotation_app.store import Store
    from itercomp.io import write_json

    report = agreement(Store(args.db, create=False).stored_rankings(round=args.round, kinds=args.kinds))
    print(format_agreement(report))
    if args.json:
        write_json(args.json, report)
        print(f"full report: {args.json}")


def simulate(args) -> None:
    from annotation_app.config import AppConfig
    from annotation_app.simulate import SimulationConfig
    from annotation_app.simulate import simulate as run
    from annotation_app.store import Store
    from annotation_app.tasks import add_gallery_tasks

    config = SimulationConfig(
        annotators=args.annotators, temperature=args.temperature, overlap=args.overlap, seed=args.seed,
        round=args.round,
    )  # fmt: skip
    store = Store(args.db)
    if args.gallery_run is not None:
        add_gallery_tasks(
            store, AppConfig(db=args.db, gallery_run=args.gallery_run, task_aspects=args.task_aspects, round=args.round)
        )
    result = run(store, config)
    p = result["progress"]
    print(
        f"{result['total']} simulated rankings by {config.annotators} annotators (temperature {config.temperature}); "
        f"round {p['round']}: {p['tasks_complete']} of {p['tasks']} tasks have {p['overlap']} rankings"
    )


def export(args) -> None:
    from annotation_app.interchange import export as run
    from annotation_app.store import Store

    out = args.output_dir
    summary = run(Store(args.db, create=False), out, round=args.round, kinds=args.kinds, paths=args.paths)
    per_aspect = ", ".join(f"{a} {n}" for a, n in summary["per_aspect"].items())
    print(f"{summary['rankings']} rankings ({per_aspect}), {summary['pairs']} pairs -> {out}")
    print(f"datasets.load_from_disk('{out}'); interchange file: {out / 'rankings.jsonl'}")


def import_(args) -> None:
    from annotation_app.interchange import import_file
    from annotation_app.store import Store

    result = import_file(
        Store(args.db), args.file, args.format, args.aspect, annotator=args.annotator,
        images_root=args.images_root, round=args.round,
    )  # fmt: skip
    print(
        f"{args.file}: {result['entries']} rankings read, {result['added']} added, {result['already_there']} "
        f"already there, {result['with_ties']} with ties (tied images give no pair)"
    )


def toy_gallery(args) -> None:
    from annotation_app.toy_gallery import make_toy_gallery

    records = make_toy_gallery(args.output_dir, args.n, seeds=tuple(range(args.seeds)), split=args.split)
    print(f"wrote {len(records)} images and {args.output_dir / 'manifest.jsonl'}")
