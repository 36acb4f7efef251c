"""Errors a user can cause (bad paths, malformed files, unknown names).

The CLI turns a `UserError` into a one-line message and exit code 2 instead of a traceback, so
its message must name the file (and line, where there is one) and say what to do.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what a command wants the user to know about the state it leaves.

    The CLI prints ``interrupted: <message>`` and exits 130.
    """


def first_line(error: object) -> str:
    """The first non-blank line of an error's text, for one-line messages."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
