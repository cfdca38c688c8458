"""`itercomp` — the command line. Each command group lives in itercomp/commands/<group>.py."""

from __future__ import annotations

import sys
import warnings

from itercomp.accelerators import end_processes
from itercomp.config import ArgumentParser
from itercomp.errors import ItercompError

# (group name, module, one-line help); a module registers its subcommands with `register(parser)`.
GROUPS = [
    ("world", "itercomp.commands.world", "the shapes world: prompts, ground-truth samples, oracle scoring"),
    ("annotate", "itercomp.commands.annotate", "the ranking app: serve, users, simulated annotators, stats, export"),
    ("pretrain", "itercomp.commands.pretrain", "train the shapes world's language model and base DiTs, then evaluate"),
    ("gallery", "itercomp.commands.gallery", "the model gallery: render prompts with many generators"),
    (
        "rewards",
        "itercomp.commands.rewards",
        "the three composition reward models: simulated data, training, evaluation",
    ),
    ("finetune", "itercomp.commands.finetune", "reward-feedback fine-tuning (ReFL / DRaFT-K / AlignProp) of a model"),
    ("iterate", "itercomp.commands.iterate", "the iterative loop: gallery, rankings, rewards, fine-tuning, report"),
    (
        "expand",
        "itercomp.commands.expand",
        "a new model joins the rankings: render every ranked prompt, insert by reward",
    ),
    ("eval", "itercomp.commands.eval", "score images with an evaluator (shapes oracle, T2I-CompBench, reward models)"),
]


class Parser(ArgumentParser):
    """itercomp's argparse (hyphenated flags, underscores accepted, examples kept on their lines) that reports a
    bad option in one line (what is wrong, where to look) and exits with 2. Modules are imported when a command
    runs, so `itercomp --help` imports no torch."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}; see '{self.prog} --help'\n")
        sys.exit(2)


def build_parser() -> Parser:
    import importlib

    parser = Parser(prog="itercomp", description="Composition-aware preference learning for text-to-image models.")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=Parser)
    groups.required = True
    for name, module, help_text in GROUPS:
        sub = groups.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(f"itercomp: warning: {message}\n")


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():
        # Deprecated names (flags, config keys) are reported in one line, once each.
        warnings.filterwarnings("default", category=DeprecationWarning, module=r"itercomp\b")
        warnings.showwarning = _show_warning
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # a command may rerun itself under a launcher
        try:
            return args.func(args) or 0
        except ItercompError as e:
            sys.stderr.write(f"itercomp: error: {e}\n")
            return 2
        except KeyboardInterrupt:
            sys.stderr.write("itercomp: interrupted; finished work is saved, run the same command again to resume\n")
            return 130
        finally:
            end_processes()


if __name__ == "__main__":
    sys.exit(main())
