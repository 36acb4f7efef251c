"""Where and how a run was made: the command line, affect's version and git commit, the host.

Recorded in RUN/config.json when training starts, so a report (or a colleague) can tell which
code and which command produced a number without asking.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

_SOURCE_DIR = Path(__file__).resolve().parent.parent


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: `affect ...` whether it ran as the script or `python -m pipelines`."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    program = Path(argv[0]).name
    if program in ("affect", "__main__.py"):
        argv[0] = "affect"
    return shlex.join(argv)


def affect_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("affect")
    except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        return "unknown"


def git_commit(source_dir: Path = _SOURCE_DIR) -> str | None:
    """The commit of the affect checkout the code runs from (`+dirty` with local changes);
    None for an installed copy outside git."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(source_dir), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+dirty" if changes else "")


def run_environment(argv: list[str] | None = None) -> dict[str, Any]:
    """command, affect_version, git_commit, host, python: the run's config.json `environment`."""
    return {
        "command": command_line(argv),
        "affect_version": affect_version(),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
    }


__all__ = ["affect_version", "command_line", "git_commit", "run_environment"]
