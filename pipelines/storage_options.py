"""`--storage-option KEY=VALUE` for every command that opens a store.

The options go to fsspec for remote stores (s3fs: endpoint_url, key, secret, anon,
client_kwargs.region_name, ...), on top of what fsspec and botocore already read from AWS_*
variables, AWS_ENDPOINT_URL and fsspec's config files. They are set process-wide when the
command line is parsed, so every store the command opens (including a run's recorded store in
`evaluate`, and the workers of `--scheduler local`) uses them; local paths ignore them. Workers
of a cluster started elsewhere (`tcp://`, SLURM) take their settings from their own AWS_*
variables or fsspec config.
"""

from __future__ import annotations

from collections.abc import Callable

import click


def _apply(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> None:
    from features_store.fsutil import parse_storage_options, set_default_storage_options

    if values:
        set_default_storage_options(parse_storage_options(values))


def storage_option(command: Callable) -> Callable:
    """Decorator: add the repeatable `--storage-option KEY=VALUE` to a click command."""
    return click.option(
        "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
        expose_value=False, callback=_apply, is_eager=True,
        help="fsspec option for a remote store (repeatable), e.g. "
             "endpoint_url=http://127.0.0.1:9000; credentials also come from AWS_* variables.",
    )(command)
