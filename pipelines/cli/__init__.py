"""The `affect` command line (also `python -m pipelines`).

Every command is a thin layer over a library function. Errors a user can cause (`UserError`,
click usage errors) print one line and exit with code 2; a traceback means a bug in affect.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import re
import signal
import sys
import threading
from collections.abc import Iterator

import click

from features_store.errors import UserError
from features_store.printable import printable
from pipelines.console import verbose_option

# Sub-command modules, each defining one click command or group named like the attribute, and
# the one-line help `affect --help` shows for it without importing the module (a test checks
# that it is the command's own first docstring line).
COMMANDS = [
    ("pipelines.cli.store", "store", "Inspect, verify, export and import feature stores."),
    ("pipelines.cli.encoders", "encoders",
     "The registered encoders, and fetching their published weights."),
    ("pipelines.cli.extract", "extract",
     "Decode each clip once and write every requested encoder's features to the store."),
    ("pipelines.cli.datasets", "datasets",
     "Dataset layouts: what each reads and its default recipe."),
    ("pipelines.cli.datasets", "sample",
     "Write a small generated copy of a dataset layout with a learnable planted signal."),
    ("pipelines.cli.datasets", "ingest",
     "Read a dataset folder into the store: clip table, label streams, aux arrays, ledger."),
    ("pipelines.cli.heads", "train",
     "Train a head on cached features; writes config, checkpoints, metrics and curves to RUN."),
    ("pipelines.cli.heads", "evaluate",
     "Score a run's best checkpoint on a split; also writes RUN/eval-<split>.json."),
    ("pipelines.cli.heads", "predict",
     "Predict a split (or new --media) with a run's best checkpoint and export the results."),
    ("pipelines.cli.heads", "ensemble",
     "Average several runs' predictions on a split and export them (scored if labelled)."),
    ("pipelines.cli.heads", "import-run",
     "Make a run folder from a paper's released checkpoint (tensors only, strictly mapped)."),
    ("pipelines.cli.heads", "heads",
     "The heads: what each trains on, the metric it is judged by, and its paper."),
    ("pipelines.cli.metrics", "metrics", "Score predictions with benchmark metrics."),
    ("pipelines.cli.demo", "demo", "Sample -> extract -> train REGNN -> evaluate -> export -> "
     "report, printing each command."),
    ("pipelines.cli.live", "live",
     "Run a trained head on a camera, a network stream or a file, one JSON line per output."),
    ("pipelines.cli.runs", "runs", "Run folders: the experiment table."),
    ("pipelines.cli.runs", "report",
     "Write one self-contained HTML page of a run: config, streams, curves, the head's plot."),
]


class LazyGroup(click.Group):
    """Imports a sub-command's module only when that command runs (or its own help is asked
    for), so `affect --help` and `affect store ls` do not pay for torch and the encoders."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(name for _, name, _ in COMMANDS)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        for module_name, attr, _ in COMMANDS:
            if attr == name:
                # a command named with a dash (import-run) is the function with an underscore
                return getattr(importlib.import_module(module_name), attr.replace("-", "_"))
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            help_line = next((h for _, attr, h in COMMANDS if attr == name), "")
            if help_line is None:  # not listed here: ask the command itself
                command = self.get_command(ctx, name)
                help_line = command.get_short_help_str(limit=120) if command else ""
            rows.append((name, help_line))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="affect")
@verbose_option
def cli() -> None:
    """affect: extract features once into a store, train many heads on them."""


# Errors the machine or the user's files cause, not affect: what to tell the user.
OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full; free space (committed parts are kept) and rerun",
    errno.EDQUOT: "the disk quota is exceeded; free space (committed parts are kept) and rerun",
    errno.EROFS: "the file system is read-only; use a writable --store / --out",
    errno.EACCES: "permission denied; use a folder you can write (or read) instead",
    errno.EPERM: "operation not permitted; use a folder you own",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EISDIR: "is a folder, expected a file",
    errno.EEXIST: "already exists and is not what was expected there",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "a file name is too long for the file system (shorten the clip id or "
                        "the path)",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop); use a real folder",
}


def os_error_line(exc: OSError) -> str | None:
    """One line for an OSError the environment caused (full disk, read-only store), else None."""
    hint = OS_ERROR_HINTS.get(exc.errno)
    if hint is None:
        return None
    where = "affect" if exc.filename is None else re.sub(r"\.tmp-[0-9a-f]+$", "", str(exc.filename))
    return f"{where}: {exc.strerror or type(exc).__name__}: {hint}"


# The signal that interrupted this command, when it was not Ctrl-C (SIGINT): its exit status is
# 128 + its number, as a shell reports a process that signal ended.
_interrupted_by: list[int] = []


def _interrupt_like_ctrl_c(signum: int, frame: object) -> None:
    # A second one ends the process at once, as a scheduler that escalates expects.
    signal.signal(signum, signal.SIG_DFL)
    _interrupted_by.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SLURM, Kubernetes and `kill` stop a job with SIGTERM: handle it as Ctrl-C, so committed
    work is kept and the user is told so, instead of the process vanishing silently."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous != signal.SIG_DFL:
        yield  # signals reach only the main thread; a handler someone installed stays theirs
        return
    _interrupted_by.clear()
    signal.signal(signal.SIGTERM, _interrupt_like_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted_status() -> int:
    return 128 + (_interrupted_by[-1] if _interrupted_by else signal.SIGINT)


def main(argv: list[str] | None = None) -> None:
    from pipelines import console

    console.configure()  # before any model library is imported: they read it when imported
    with _sigterm_as_ctrl_c():
        _main(argv)


def _main(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="affect", standalone_mode=False)
    except getattr(click.exceptions, "NoArgsIsHelpError", ()) as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(2)
    except click.exceptions.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into Abort; a command may have said what its interruption keeps.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, KeyboardInterrupt):
            click.echo(f"interrupted: {cause}" if str(cause) else "interrupted", err=True)
        else:
            click.echo("aborted", err=True)
        sys.exit(_interrupted_status())
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(printable(f"error: {exc}"), err=True)  # may quote a store's or a file's text
        sys.exit(2)
    except OSError as exc:
        known = os_error_line(exc)
        if known is None:
            raise  # not the environment's doing: a bug, keep its traceback
        click.echo(f"error: {known}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted: committed parts are kept; rerun to resume", err=True)
        sys.exit(_interrupted_status())
