"""The one user-facing error type: the CLI prints its message on one line and exits with code 2."""


class ItercompError(Exception):
    """A problem the user can fix (bad prompt, missing file, bad option). The message says what and how."""


class PromptError(ItercompError, ValueError):
    """A prompt that the shapes world cannot parse or cannot draw."""
