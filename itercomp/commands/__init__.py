"""Command groups of the `itercomp` CLI; each module has `register(parser)` and sets `func` per subcommand."""


def subcommands(parser):
    from itercomp.cli import Parser

    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=Parser)
    sub.required = True
    return sub
