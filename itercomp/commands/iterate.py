"""`itercomp iterate`: the iterative loop (gallery -> rankings -> reward models -> fine-tuning -> evaluation ->
gallery expansion), per round, resumable. Flags are IterateConfig's fields (itercomp/loop/config.py)."""

from __future__ import annotations

from pathlib import Path

DESCRIPTION = (
    "Run IterComp's loop for --rounds rounds into --output-dir: round 0 evaluates the base model; each round renders new "
    "prompts with the gallery, gets rankings (simulated annotators, or humans through the annotation app), refines "
    "the three reward models, fine-tunes the previous round's model with reward feedback, evaluates it with the "
    "oracle on the test split, and inserts its images into the rankings for the next round. Writes report.json, "
    "scores.png and grids/. --resume continues a stopped run without redoing finished stages. Settings: "
    "--config FILE (YAML) and --FIELD VALUE flags; --rewards/--finetune FIELD=VALUE pass settings to the reward "
    "trainer (RewardTrainConfig) and the fine-tuner (FeedbackConfig, over --finetune-recipe's settings). Exit code 3: "
    "waiting for human rankings."
)


def register(parser) -> None:
    from itercomp.config import add_config_arguments
    from itercomp.loop.config import IterateConfig

    parser.description = DESCRIPTION
    add_config_arguments(parser, IterateConfig)
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the run in --output-dir (its saved config.yaml; only --rounds and waiting settings may change)",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true",
        help="check the settings, gallery and prompt files offline and print the plan (stages, prompts per round, "
        "models, evaluator); nothing is run or written",
    )  # fmt: skip
    parser.set_defaults(func=iterate)


def _saved_config(args) -> dict | None:
    """The saved settings of the run being resumed (None for a new run)."""
    import yaml

    from itercomp.loop.config import load_iterate_config
    from itercomp.loop.layout import RunLayout

    if not args.resume:
        return None
    path = RunLayout(Path(load_iterate_config(args).output_dir)).config
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def iterate(args) -> int:
    from itercomp.loop.config import load_iterate_config
    from itercomp.loop.human import EXIT_WAITING, WaitingForRankings
    from itercomp.loop.processes import launch_command, launched
    from itercomp.loop.report import format_table, table_title
    from itercomp.loop.run import iterate as run

    config = load_iterate_config(args, saved=_saved_config(args))
    if config.num_processes > 1 and not args.dry_run and not launched():
        import subprocess

        command, env = launch_command(config.num_processes, args.argv)
        print(f"itercomp: running on {config.num_processes} processes: {' '.join(command)}", flush=True)
        return subprocess.call(command, env=env)
    if args.dry_run:
        from itercomp.loop.plan import build_plan, format_plan
        from itercomp.loop.run import prepare

        print(format_plan(build_plan(prepare(config, args.resume, None, None, None, print, dry_run=True))))
        return 0
    try:
        report = run(config, resume=args.resume)
    except WaitingForRankings as e:
        print(f"itercomp: waiting: {e}")
        return EXIT_WAITING
    if report is None:  # a process other than the main one of a multi-process run
        return 0
    print()
    print(f"{table_title(report)} on the test prompts (round 0 = base model):")
    print(format_table(report))
    print(f"report:   {config.output_dir}/report.json")
    print(f"pictures: {report['pictures']['scores']}")
    for path in report["pictures"].get("grid_files", []):
        print(f"          {path}")
    return 0
