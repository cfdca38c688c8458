"""`itercomp pretrain`: train the shapes world's language model and base DiTs (deep fusion + two ablations)."""

from __future__ import annotations

from pathlib import Path


def register(parser) -> None:
    from itercomp.config import add_config_arguments
    from itercomp.models.config import PretrainConfig

    parser.description = (
        "Renders train-split ground truth, trains the language model, then one DiT per conditioning, and evaluates "
        "them with the oracle on the test split. Every stage is resumable: run the same command again after a kill."
    )
    add_config_arguments(parser, PretrainConfig)
    parser.add_argument(
        "--export",
        type=Path,
        help="afterwards, copy the members here for shipping (fp16 DiTs, one shared LM), e.g. itercomp/weights",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output-dir from its checkpoints (model, EMA, optimiser, data position and "
        "schedule) with the settings it was started with; needed once the folder holds a run",
    )
    parser.set_defaults(func=pretrain)


def pretrain(args) -> None:
    from itercomp.config import config_from_namespace
    from itercomp.models.config import PretrainConfig
    from itercomp.models.pretrain import export_weights, run_pretrain

    config = config_from_namespace(PretrainConfig, args)
    result = run_pretrain(config, resume=args.resume)
    if args.export and result["finished"]:
        for path in export_weights(Path(config.output_dir), args.export):
            print(f"exported {path}")
