"""`affect encoders ...`: what encoders exist and whether their weights are here."""

from __future__ import annotations

import json

import click

from extract.encoders import list_encoders, weights_available
from features_store.tables import format_table


def _shift(value: float | None, modality: str) -> str:
    if value is not None:
        return f"{value:g}s"
    return "per-frame" if modality == "video" else "per-utterance"


HEADERS = {"frame_shift_s": "frame shift", "default_weights": "default weights"}


@click.group()
def encoders() -> None:
    """The registered encoders, and fetching their published weights."""


@encoders.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
def ls(as_json: bool) -> None:
    """Name, modality, output dim, frame shift, default weights and whether they are cached.

    Checks the local caches only; nothing is downloaded.
    """
    rows = [
        {
            "name": spec.name,
            "modality": spec.modality,
            "dim": spec.dim,
            "frame_shift_s": spec.frame_shift_s,
            "default_weights": spec.default_weights,
            "available": weights_available(spec.name),
        }
        for spec in list_encoders()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    shown = [
        {
            **row,
            "frame_shift_s": _shift(row["frame_shift_s"], row["modality"]),
            "available": "yes" if row["available"] else "no",
        }
        for row in rows
    ]
    click.echo(format_table(shown, list(shown[0]), HEADERS))
    missing = [row["name"] for row in rows if not row["available"]]
    if missing:
        click.echo(
            f"{len(missing)} without local weights: building one says what to download and "
            "where; --weights PATH or --weights random work without them"
        )


@encoders.command("fetch")
@click.argument("names", nargs=-1, required=True)
def fetch(names: tuple[str, ...]) -> None:
    """Download the published default weights of encoder NAME(S) into the caches the loaders
    read (the only command that downloads); offline, say what it would fetch and exit 2."""
    from extract.encoders import create_encoder
    from extract.encoders.fetch import downloads
    from extract.encoders.fetch import fetch as fetch_weights

    for name in names:
        if not downloads(name):
            click.echo(f"{name}: its weights ship with the installed packages; nothing to fetch")
            continue
        if weights_available(name):
            click.echo(f"{name}: default weights already here; nothing to fetch")
            continue
        fetch_weights(name, report=click.echo)
        if not weights_available(name):
            # What still stands between the file and the loader (HSEmotion publishes a pickled
            # model, which affect never unpickles): the loader's own one-line error says it.
            create_encoder(name, weights="default")
        click.echo(f"{name}: default weights ready (`--weights default`)")
