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
    """List the registered encoders."""


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
