"""The `affect` command line (also `python -m pipelines`).

Every command is a thin layer over a library function. Errors a user can cause (`UserError`,
click usage errors) print one line and exit with code 2; a traceback means a bug in affect.
"""

from __future__ import annotations

import errno
import importlib
import re
import sys

import click

from features_store.errors import UserError

# Sub-command modules, each defining one click command or group named like the attribute.
COMMANDS = [
    ("pipelines.cli_store", "store"),
    ("pipelines.cli_encoders", "encoders"),
    ("pipelines.cli_extract", "extract"),
    ("pipelines.cli_datasets", "datasets"),
    ("pipelines.cli_datasets", "sample"),
    ("pipelines.cli_datasets", "ingest"),
    ("pipelines.cli_heads", "train"),
    ("pipelines.cli_heads", "evaluate"),
    ("pipelines.cli_heads", "predict"),
    ("pipelines.cli_heads", "ensemble"),
    ("pipelines.cli_metrics", "metrics"),
    ("pipelines.cli_demo", "demo"),
    ("pipelines.cli_runs", "runs"),
    ("pipelines.cli_runs", "report"),
]


class LazyGroup(click.Group):
    """Imports a sub-command's module only when that command runs (or help lists it), so
    `affect store ls` does not pay for importing torch and the encoder libraries."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(name for _, name in COMMANDS)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        for module_name, attr in COMMANDS:
            if attr == name:
                return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="affect")
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
}


def os_error_line(exc: OSError) -> str | None:
    """One line for an OSError the environment caused (full disk, read-only store), else None."""
    hint = OS_ERROR_HINTS.get(exc.errno)
    if hint is None:
        return None
    where = "affect" if exc.filename is None else re.sub(r"\.tmp-[0-9a-f]+$", "", str(exc.filename))
    return f"{where}: {exc.strerror or type(exc).__name__}: {hint}"


def main(argv: list[str] | None = None) -> None:
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
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        known = os_error_line(exc)
        if known is None:
            raise  # not the environment's doing: a bug, keep its traceback
        click.echo(f"error: {known}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted: committed parts are kept; rerun to resume", err=True)
        sys.exit(130)
