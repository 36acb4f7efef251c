"""`affect store ...`: look into, check, export and import feature stores."""

from __future__ import annotations

import json
import sys

import click
from tqdm import tqdm

from features_store import open_store, verify
from features_store.errors import UserError
from features_store.exchange import FORMATS, export_stream, import_folder
from features_store.numerics_check import mixed_numerics
from features_store.printable import printable
from features_store.tables import format_table, plural
from pipelines.storage_options import storage_option

HF_FORMAT = "hf"  # a Hugging Face `datasets` dataset on disk (features_store.interop)


def _fmt_shift(value: float | None) -> str:
    return "per-clip" if value is None else f"{value:g}"


def _names_to_use(s, infos) -> dict[str, str]:
    """stream key -> what selects that stream: its alias where the alias resolves to it, else
    its key (two streams of one alias, e.g. a partial `--limit` run and a full one)."""
    names = {}
    for info in infos:
        shared = [o for o in infos if o.alias == info.alias]
        names[info.key] = (info.alias if len(shared) == 1 or s.resolve(info.alias).key == info.key
                           else info.key)
    return names


def _flat_items(mapping: dict, prefix: str = ""):
    """(dotted name, value) for every leaf of a nested dict, in its order."""
    for name, value in mapping.items():
        if isinstance(value, dict) and value:
            yield from _flat_items(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def _readable(value) -> str:
    """A provenance value as a person reads it: no Python reprs (None, True, brackets)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_readable(v) for v in value) or "(none)"
    if isinstance(value, dict):
        return "(none)" if not value else ", ".join(f"{k}={_readable(v)}"
                                                     for k, v in value.items())
    return str(value)


@click.group()
def store() -> None:
    """Inspect, verify, export and import feature stores."""


@store.command("ls")
@storage_option
@click.argument("store_url")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
def ls(store_url: str, as_json: bool) -> None:
    """One row per stream: alias, key, kind, dim, dtype, frame shift, clips, rows, bytes."""
    s = open_store(store_url, mode="r")
    infos = s.streams()
    use = _names_to_use(s, infos)
    table_clips = len(s.clip_ids())
    rows = []
    for info in infos:
        index = s.index(info)
        rows.append({
            "stream": use[info.key], "alias": info.alias, "key": info.key, "kind": info.kind,
            "dim": info.dim, "dtype": info.dtype, "frame_shift_s": info.frame_shift_s,
            "clips": len(index), "rows": int(index.n_rows.sum()), "bytes": s.nbytes(info),
            "created": info.created,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        if not rows:
            click.echo("(no streams)")
        else:
            # `stream` is unique per row: the alias where it selects the stream, else the key.
            shown = [{**r, "frame_shift_s": _fmt_shift(r["frame_shift_s"])} for r in rows]
            columns = ["stream", "key", "kind", "dim", "dtype", "frame_shift_s", "clips",
                       "rows", "bytes", "created"]
            click.echo(format_table(shown, columns, {"frame_shift_s": "shift s"}))
        click.echo(f"{plural(table_clips, 'clip')} in the clip table")
    if s.damaged_streams:  # listed streams are usable; the damaged ones fail the command
        _, why = sorted(s.damaged_streams.items())[0]
        more = len(s.damaged_streams) - 1
        raise UserError(f"{why}{f' (and {more} more damaged stream(s))' if more else ''}; "
                        "`affect store verify` lists every problem")


@store.command("info")
@storage_option
@click.argument("store_url")
@click.argument("stream")
@click.option("--json", "as_json", is_flag=True)
def info(store_url: str, stream: str, as_json: bool) -> None:
    """A stream's attributes (provenance) and per-clip shapes, from metadata only."""
    s = open_store(store_url, mode="r")
    stream_info = s.resolve(stream)
    shapes = s.shape_manifest(stream_info)
    if as_json:
        click.echo(json.dumps({
            "attrs": stream_info.to_dict(),
            "clips": [{"clip_id": c.clip_id, "shape": list(c.shape), "t0": c.t0,
                       "t_end": c.t_end, "part": c.part_id} for c in shapes],
        }, indent=1))
        return
    for key, value in stream_info.to_dict().items():
        if isinstance(value, dict):  # preprocessing, claims, extra: one line per setting
            click.echo(printable(f"{key:>15}:"))
            for name, item in _flat_items(value):
                click.echo(printable(f"{'':>17}{name}: {_readable(item)}"))
        else:
            click.echo(printable(f"{key:>15}: {_readable(value)}"))
    click.echo(plural(len(shapes), "clip"))
    for c in shapes:
        span = "" if c.t_end is None else f" .. {c.t_end:g}s"
        click.echo(printable(f"  {c.clip_id}  {list(c.shape)}  t0={c.t0:g}s{span}"))


@store.command("verify")
@storage_option
@click.argument("store_url")
@click.option("--no-values", is_flag=True, help="Skip the NaN/Inf and chunk-decoding scan.")
@click.option("--numerics", is_flag=True,
              help="Also list streams whose parts were computed by different numerics "
                   "(library versions, threads, device): their last bits may differ.")
def verify_cmd(store_url: str, no_values: bool, numerics: bool) -> None:
    """Exit 0 when the store is sound, else 1 with every problem listed."""
    s = open_store(store_url, mode="r")
    report = verify(s, check_values=not no_values)
    if numerics:
        report.problems.extend(m.describe() for m in mixed_numerics(s))
    # A clip held by five streams is one clip: count clips and clip-streams apart.
    summary = (f"{plural(report.streams, 'stream')}, {plural(report.parts, 'part')}, "
               f"{plural(len(report.clip_ids), 'clip')} ({plural(report.clips, 'clip-stream')}), "
               f"{plural(report.rows, 'row')}")
    if report.failed:
        summary += (f"; {plural(report.failed, 'clip-stream')} failed "
                    f"(`affect store ledger {store_url}`)")
    if report.ok:
        click.echo(f"ok: {summary}")
        for note in report.notes:
            click.echo(printable(f"note: {note}"))
        return
    for problem in report.problems:
        click.echo(printable(problem))
    for note in report.notes:
        click.echo(printable(f"note: {note}"))
    click.echo(f"{len(report.problems)} problem(s) in {summary}", err=True)
    sys.exit(1)


@store.command("finalize")
@storage_option
@click.argument("store_url")
@click.option("--prune", is_flag=True,
              help="Delete uncommitted parts whose writer is provably dead.")
def finalize_cmd(store_url: str, prune: bool) -> None:
    """Merge committed manifests into the index (one process only).

    --prune deletes only parts whose writer is provably dead (lease expired, or its pid gone on
    this host); parts being written by live runs are kept.
    """
    pruned = open_store(store_url).finalize(prune_orphans=prune)
    for key, parts in pruned.items():
        for part, why in sorted(parts.items()):
            click.echo(f"pruned {key}/{part}: {why}")
    click.echo("finalized")


@store.command("ledger")
@storage_option
@click.argument("store_url")
@click.option("--json", "as_json", is_flag=True)
@click.option("--history", is_flag=True,
              help="Every entry ever written, including clips that later succeeded.")
def ledger(store_url: str, as_json: bool, history: bool) -> None:
    """The failure ledger: clips that failed (and have not succeeded since), at which stage,
    and why."""
    failures = open_store(store_url, mode="r").failures(history=history)
    if as_json:
        click.echo(json.dumps(failures, indent=1))
        return
    for f in failures:
        # Each field escaped: clip ids and messages are others' text (tabs too: the separator).
        click.echo("\t".join(printable(f.get(k)) for k in ("clip_id", "stage", "message")))
    click.echo(plural(len(failures), "failure"))


@store.command("export")
@storage_option
@click.argument("store_url")
@click.argument("stream")
@click.option("--format", "fmt", type=click.Choice([*FORMATS, HF_FORMAT]), default="npy",
              show_default=True, help="npy, pth: one file per clip; hf: a Hugging Face dataset "
              "(datasets.load_from_disk(OUT)), needs the `interop` extra.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--dtype", default=None, help="Cast on export, e.g. float32.")
def export(store_url: str, stream: str, fmt: str, out_dir: str, dtype: str | None) -> None:
    """One file per clip at OUT/<clip_id>.<format> (clip ids with '/' become folders), or with
    --format hf one Hugging Face dataset at OUT (one record per clip)."""
    s = open_store(store_url, mode="r")
    total = len(s.index(stream))
    with tqdm(total=total, desc="export", unit="clip", disable=None) as bar:
        if fmt == HF_FORMAT:
            from features_store.interop import export_hf

            n = export_hf(s, stream, out_dir, dtype, progress=bar.update)
        else:
            n = export_stream(s, stream, out_dir, fmt, dtype, progress=bar.update)
    click.echo(f"exported {plural(n, 'clip')} to {out_dir}")


@store.command("import")
@storage_option
@click.argument("folder", type=click.Path())
@click.option("--store", "store_url", required=True)
@click.option("--stream", "name", required=True, help="Name (and alias) of the new stream.")
@click.option("--frame-shift", type=float, default=None,
              help="Seconds between rows; omit for one row per clip.")
@click.option("--kind", type=click.Choice(["feature", "label"]), default="feature")
def import_cmd(folder: str, store_url: str, name: str, frame_shift: float | None,
               kind: str) -> None:
    """Import a folder of per-clip .npy/.pth files (clip id = relative path)."""
    s = open_store(store_url)
    with tqdm(desc="import", unit="clip", disable=None) as bar:
        report = import_folder(s, folder, name, frame_shift, kind, progress=bar.update)
    click.echo(f"imported {plural(report.clips, 'clip')} ({plural(report.rows, 'row')}) into "
               f"{report.stream.alias} [{report.stream.key}]")
