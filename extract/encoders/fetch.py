"""`affect encoders fetch NAME`: put an encoder's published default weights where its loader
looks for them, on a user's machine with network.

This is the one place in affect that downloads, and only when asked: extraction, tests and the
demo never do. The files and folders come from the catalog (`specs.py`), the same facts the
loaders read, so a fetched file is found by `--weights default` without further steps. A machine
that says it is offline (`HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE` or `AFFECT_OFFLINE` set) is not
tried: the error names what would be fetched, from where, and where it would go.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from extract.encoders.specs import CATALOG, Download
from features_store.errors import UserError

OFFLINE_VARIABLES = ("AFFECT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# torch.hub's convention: `name-<first hex digits of the sha256>.ext` carries its own check.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


def offline_reason() -> str | None:
    """The variable that says this machine is offline (`NAME=value`), or None."""
    for name in OFFLINE_VARIABLES:
        value = os.environ.get(name, "").strip().lower()
        if value and value not in ("0", "false", "no", "off"):
            return f"{name}={os.environ[name]}"
    return None


def downloads(name: str) -> tuple[Download, ...]:
    """What `name`'s published default weights are made of (empty: nothing to fetch)."""
    for entry in CATALOG:
        if entry.spec.name == name:
            return entry.downloads
    known = ", ".join(entry.spec.name for entry in CATALOG)
    raise UserError(f"unknown encoder {name!r}; known encoders: {known}")


def describe(download: Download) -> str:
    return f"{download.what} from {download.source} into {download.folder()}"


def fetch(name: str, report: Callable[[str], None] = print) -> list[Path]:
    """Download every file of `name`'s default weights into its cache folder; the local paths.

    Offline, or when a download fails, a UserError says what was (or would be) fetched and
    where it goes, so the user can put it there by hand."""
    wanted = downloads(name)
    reason = offline_reason()
    if reason and wanted:
        raise UserError(f"encoder {name}: offline ({reason}), nothing downloaded; would fetch "
                        + "; ".join(describe(d) for d in wanted))
    paths = []
    for download in wanted:
        report(f"fetching {describe(download)}")
        try:
            paths.append(_download(download))
        except Exception as exc:  # network, HTTP, hub and disk errors have no common base
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UserError(f"encoder {name}: could not fetch {download.what} from "
                            f"{download.source} ({type(exc).__name__}: {first}); put it into "
                            f"{download.folder()} by hand, or pass --weights PATH") from None
        report(f"  -> {paths[-1]}")
    return paths


def _download(download: Download) -> Path:
    folder = download.folder()
    if download.hf_repo:
        from huggingface_hub import hf_hub_download, snapshot_download

        if not download.hf_files:
            return Path(snapshot_download(download.hf_repo, cache_dir=folder))
        got = [hf_hub_download(download.hf_repo, f, cache_dir=folder)
               for f in download.hf_files]
        return Path(got[-1]).parent
    from torch.hub import download_url_to_file

    target = folder / download.what
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        found = _HASH_IN_NAME.search(download.what)
        download_url_to_file(str(download.url), str(target),
                             hash_prefix=found.group(1) if found else None, progress=True)
    return target
