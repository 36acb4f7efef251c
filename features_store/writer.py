"""Writing one part of one stream: rows streamed in, manifest written last as the commit.

Exactly one writer owns a part: it holds the part's lease (features_store.commit) from before
its first byte until after its manifest. Until `commit` writes the manifest, readers ignore the
part; a writer that dies (even by SIGKILL) leaves an orphan array and a lease that stops being
renewed. A rerun with the same part id takes such a part over once its writer is provably dead;
while the writer may be alive, a newcomer writes a private part id instead and never touches it.
A part that is committed is never reopened (`PartCommitted`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from . import commit as protocol
from .backends.base import chunk_rows_for
from .errors import UserError
from .manifest import ClipEntry, PartManifest, StreamInfo, rows_bytes
from .paths import check_clip_id

if TYPE_CHECKING:
    from .store import FeatureStore

log = logging.getLogger(__name__)
PART_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PartWriter:
    """Context manager: `with store.part_writer(key, "p0") as w: w.write_clip(...)`.

    Leaving the block normally commits; leaving it by an exception discards the part.
    """

    def __init__(self, store: FeatureStore, info: StreamInfo, part_id: str,
                 numerics: dict | None = None) -> None:
        if not PART_ID_PATTERN.match(part_id):
            raise UserError(f"part id {part_id!r}: use letters, digits, '_', '-', '.' only")
        self.store, self.info = store, info
        self.numerics = dict(numerics or {})
        self.dtype = np.dtype(info.dtype)
        self.lease = protocol.acquire(store, info.key, part_id)  # raises PartCommitted
        self.part_id = self.lease.part_id  # a private variant while another writer holds it
        try:
            self.array = store.backend.part_writer(info.key, self.part_id, info.dim, info.dtype)
        except BaseException:
            protocol.delete_own_part(store, self.lease)
            raise
        self.entries: list[ClipEntry] = []
        self.rows = 0
        # Re-check the lease about once per backend flush (8 chunks): a writer pruned as dead
        # (stalled past its TTL) stops writing into a path that may have a new owner.
        self._check_every = 8 * chunk_rows_for(info.dim, info.dtype)
        self._unchecked = 0
        self._open_clip: ClipEntry | None = None
        self._clip_ids: set[str] = set()
        # The checksum of every row as written, in order (dropped clips' rows too): verify
        # compares it with the stored array, so a flipped bit, a zeroed chunk or swapped parts
        # cannot pass for the committed data.
        self.digest = hashlib.sha256()
        self.closed = False

    # Whole clips -------------------------------------------------------------------------
    def write_clip(
        self, clip_id: str, rows: np.ndarray, t0: float = 0.0, t_end: float | None = None
    ) -> None:
        self.begin_clip(clip_id, t0)
        self.append(rows)
        self.end_clip(t_end)

    # Streamed clips (rows arrive in pieces, memory stays flat) -------------------------------
    def begin_clip(self, clip_id: str, t0: float = 0.0) -> None:
        if self._open_clip is not None:
            raise RuntimeError(f"clip {self._open_clip.clip_id!r} is still open")
        check_clip_id(clip_id, f"stream {self.info.alias}, part {self.part_id}")
        if clip_id in self._clip_ids:
            raise ValueError(f"clip {clip_id!r} written twice to part {self.part_id}")
        self._open_clip = ClipEntry(clip_id=clip_id, row_start=self.rows, n_rows=0, t0=float(t0))

    def append(self, rows: np.ndarray) -> None:
        if self._open_clip is None:
            raise RuntimeError("append() outside begin_clip()/end_clip()")
        rows = np.asarray(rows)
        if rows.ndim == 1 and self.info.dim == rows.shape[0]:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != self.info.dim:
            raise ValueError(
                f"stream {self.info.alias}: rows of shape {rows.shape}, "
                f"expected [T, {self.info.dim}]"
            )
        self._unchecked += len(rows)
        if self._unchecked >= self._check_every:
            protocol.check_held(self.store, self.lease)
            self._unchecked = 0
        rows = rows.astype(self.dtype, copy=False)
        self.array.append(rows)
        self.digest.update(rows_bytes(rows))
        self.rows += len(rows)
        self._open_clip.n_rows += len(rows)

    def end_clip(self, t_end: float | None = None) -> None:
        entry = self._open_clip
        if entry is None:
            raise RuntimeError("end_clip() without begin_clip()")
        entry.t_end = None if t_end is None else float(t_end)
        self.entries.append(entry)
        self._clip_ids.add(entry.clip_id)
        self._open_clip = None

    def drop_clip(self) -> None:
        """Abandon the open clip (its source failed midway).

        Rows already streamed stay in the array as dead rows that no manifest entry points at,
        so readers never see them; the next clip starts after them.
        """
        self._open_clip = None

    # Commit protocol ---------------------------------------------------------------------
    def commit(self) -> PartManifest:
        """Publish the part. Clips another part committed first are left out (first commit
        wins, noted in `discarded`); if none is left, the part is dropped, not committed."""
        # Fencing: a writer whose part was pruned writes nothing more and publishes nothing.
        try:
            protocol.check_held(self.store, self.lease)
        except protocol.LeaseLost:
            self.array.discard()
            self.closed = True
            raise
        if self._open_clip is not None:
            raise RuntimeError(f"clip {self._open_clip.clip_id!r} was not ended")
        n_rows = self.array.close()
        if n_rows != self.rows:
            raise RuntimeError(f"part {self.part_id}: wrote {n_rows} rows, expected {self.rows}")
        protocol.check_held(self.store, self.lease)
        self.store._indexes.pop(self.info.key, None)
        taken = self.store.committed_clip_ids(self.info.key)
        kept = [e for e in self.entries if e.clip_id not in taken]
        discarded = [e.clip_id for e in self.entries if e.clip_id in taken]
        manifest = PartManifest(
            part_id=self.part_id,
            stream_key=self.info.key,
            dim=self.info.dim,
            dtype=self.info.dtype,
            n_rows=n_rows,
            clips=kept,
            created=now_iso(),
            writer=f"{socket.gethostname()}:{os.getpid()}",
            commit_time=time.time(),
            run_id=self.store.run_id,
            discarded=discarded,
            sha256=self.digest.hexdigest(),
            numerics=self.numerics,
        )
        if discarded:
            log.info("part %s of %s: %d clip(s) already committed by another part, discarded "
                     "(first commit wins): %s", self.part_id, self.info.alias, len(discarded),
                     ", ".join(discarded[:5]))
        self.closed = True
        if self.entries and not kept:
            protocol.delete_own_part(self.store, self.lease)
            return manifest
        if not self.store._write_manifest(self.info.key, manifest, exclusive=True):
            protocol.delete_own_part(self.store, self.lease)
            raise protocol.PartCommitted(self.info.key, self.part_id)
        protocol.release(self.store, self.lease)
        return manifest

    def abort(self) -> None:
        self.array.discard()
        self.closed = True
        try:
            protocol.delete_own_part(self.store, self.lease)
        except (OSError, protocol.LeaseLost) as exc:
            # An orphan is harmless: readers ignore it; it is pruned once provably dead.
            log.warning("could not remove uncommitted part %s: %s", self.part_id, exc)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.closed:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()
