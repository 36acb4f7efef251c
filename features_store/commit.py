"""The commit protocol: who may write a part, when it becomes visible, and who may delete it.

A part's array lives at a path named by its part id. Three small files decide its fate:

    streams/<key>/leases/part-<id>.json     the writer's lease: run, host, pid, heartbeat
    streams/<key>/manifests/part-<id>.json  the commit marker (written once, never replaced)
    streams/<key>/parts/part-<id>...        the rows (backend files)

Rules, in the order a writer meets them:
1. A writer creates the lease with an exclusive create (O_EXCL link on a local disk, a
   conditional `If-None-Match` PUT on S3) before it touches the part's path. At most one lease
   exists per part path, so at most one process writes there. A held lease whose writer is
   provably dead is taken over through rule 4; a live one makes the newcomer write a private
   part id instead (`<id>.<token>`), so two writers never share a path.
2. While writing, a process-wide heartbeat rewrites each held lease every `ttl/6` seconds.
3. Commit: the writer checks it still holds its lease (fencing: a writer stalled past its TTL
   whose part was pruned must not publish a manifest naming missing data), then creates the
   manifest exclusively (first commit wins), then drops the lease. Abort deletes the array, then
   the lease.
4. Deletion of a part's array happens only in `delete_dead_part`: when the part has no manifest
   and its lease is provably dead (heartbeat older than its TTL; or on this host, its pid gone;
   or it belongs to the caller's own finished run), or it has no lease at all, in which case the
   deleter first takes the lease itself, so no writer can start there meanwhile. Every listing
   and existence check on the way bypasses fsspec's directory cache.

A clip committed by two parts (two runs raced over the same clips) is resolved by the index: the
earliest commit (commit time, then part id) wins everywhere, deterministically. A committed part
none of whose clips wins is dead weight that can never win again (later commits only sort after
the winners), so `reclaim_superseded_parts` deletes it, the one case where a committed part is
deleted: under its lease (so it happens once), manifest first (so no new reader indexes it),
then the rows. A part that lost only some of its clips keeps them: its array is never rewritten.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .errors import UserError
from .fsutil import create_exclusive, exists, read_json, remove, write_json

if TYPE_CHECKING:
    from .manifest import PartManifest
    from .store import FeatureStore

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 300.0


def lease_ttl_s() -> float:
    """How long a silent lease stays live (AFFECT_LEASE_TTL_S; default five minutes)."""
    try:
        return float(os.environ.get("AFFECT_LEASE_TTL_S", DEFAULT_TTL_S))
    except ValueError:
        return DEFAULT_TTL_S


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


HOST = socket.gethostname()
BOOT = _boot_id()


def pid_alive(pid: int, start_ticks: str = "") -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start_ticks or _start_ticks(pid) in ("", start_ticks)


class PartCommitted(Exception):
    """The part is already committed: it is never rewritten in place (skip the task)."""

    def __init__(self, stream_key: str, part_id: str) -> None:
        super().__init__(f"stream {stream_key}: part {part_id} is already committed")
        self.stream_key, self.part_id = stream_key, part_id


class LeaseLost(RuntimeError):
    """This writer's lease was taken away (it stalled past its TTL): its part is not committed."""


@dataclass
class Lease:
    stream_key: str
    part_id: str
    token: str
    run_id: str
    host: str
    boot: str
    pid: int
    pid_start: str
    started: float
    heartbeat: float
    ttl_s: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Lease:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def dead_reason(self, own_run_id: str | None = None, now: float | None = None) -> str | None:
        """Why this lease's writer is provably gone, or None while it may be alive."""
        now = time.time() if now is None else now
        if own_run_id is not None and self.run_id == own_run_id:
            return f"its run {self.run_id} has finished"
        if now - self.heartbeat > self.ttl_s:
            return f"lease expired {now - self.heartbeat:.0f}s after its last heartbeat"
        if self.host == HOST and self.boot == BOOT and not pid_alive(self.pid, self.pid_start):
            return f"its writer (pid {self.pid} on {self.host}) is gone"
        return None


def lease_dir(store: FeatureStore, stream_key: str) -> str:
    return f"{store.path}/streams/{stream_key}/leases"


def lease_path(store: FeatureStore, stream_key: str, part_id: str) -> str:
    return f"{lease_dir(store, stream_key)}/part-{part_id}.json"


def manifest_path(store: FeatureStore, stream_key: str, part_id: str) -> str:
    return f"{store.path}/streams/{stream_key}/manifests/part-{part_id}.json"


def read_lease(store: FeatureStore, stream_key: str, part_id: str) -> Lease | None:
    path = lease_path(store, stream_key, part_id)
    if not exists(store.fs, path):
        return None
    try:
        data = read_json(store.fs, path)
    except FileNotFoundError:  # dropped between the check and the read: its writer finished
        return None
    try:
        return Lease.from_dict(data)
    except (TypeError, KeyError) as exc:
        raise UserError(f"{path}: malformed lease ({exc}); delete it if no writer runs") from None


def is_committed(store: FeatureStore, stream_key: str, part_id: str) -> bool:
    return exists(store.fs, manifest_path(store, stream_key, part_id))


# Heartbeat --------------------------------------------------------------------------------------


class _Heartbeat:
    """One daemon thread per process renewing every lease this process holds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, tuple[object, Lease]] = {}
        self.lost: set[str] = set()
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()

    def add(self, fs, path: str, lease: Lease) -> None:
        with self.lock:
            self.held[path] = (fs, lease)
            self.lost.discard(path)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name="affect-lease-heartbeat")
                self.thread.start()
        self.wake.set()  # recompute the period: this lease's TTL may be the shortest

    def remove(self, path: str) -> None:
        with self.lock:
            self.held.pop(path, None)

    def _run(self) -> None:
        while True:
            with self.lock:
                items = list(self.held.items())
                period = min((lease.ttl_s for _, (_, lease) in items), default=DEFAULT_TTL_S) / 6
            if self.wake.wait(max(0.05, period)):
                self.wake.clear()
                continue
            for path, (fs, lease) in items:
                # Under the lock, so a release (which removes the lease from `held` first)
                # can never be followed by this beat writing the lease file back.
                with self.lock:
                    if path not in self.held:
                        continue
                    try:
                        # Renew only a lease that is still there: one pruned as dead stays so.
                        if not exists(fs, path):
                            self.lost.add(path)
                            continue
                        lease.heartbeat = time.time()
                        write_json(fs, path, lease.to_dict())
                    except OSError as exc:  # a transient storage error: the next beat retries
                        log.warning("lease heartbeat %s failed: %s", path, exc)


HEARTBEAT = _Heartbeat()


def _forget_in_child() -> None:
    # A forked child (a DataLoader or dask worker) holds none of its parent's leases: it must
    # not renew them, or a dead parent's parts would look alive for as long as the child runs.
    global HEARTBEAT
    HEARTBEAT = _Heartbeat()


os.register_at_fork(after_in_child=_forget_in_child)


# Acquire, check, release ------------------------------------------------------------------------


def _new_lease(store: FeatureStore, stream_key: str, part_id: str) -> Lease:
    now = time.time()
    pid = os.getpid()
    return Lease(stream_key=stream_key, part_id=part_id, token=uuid.uuid4().hex,
                 run_id=store.run_id, host=HOST, boot=BOOT, pid=pid, pid_start=_start_ticks(pid),
                 started=now, heartbeat=now, ttl_s=lease_ttl_s())


def _try_create(store: FeatureStore, stream_key: str, part_id: str) -> Lease | None:
    lease = _new_lease(store, stream_key, part_id)
    path = lease_path(store, stream_key, part_id)
    if not create_exclusive(store.fs, path, json.dumps(lease.to_dict(), indent=1).encode()):
        return None
    return lease


def acquire(store: FeatureStore, stream_key: str, part_id: str) -> Lease:
    """Own `part_id` (or a private variant of it) for writing; raise PartCommitted if done.

    Returns the lease; its `part_id` is the id the writer must use.
    """
    if is_committed(store, stream_key, part_id):
        raise PartCommitted(stream_key, part_id)
    lease = _try_create(store, stream_key, part_id)
    if lease is None:
        # Held: take it over if its writer is provably dead (a rerun after a kill reuses the
        # task's part id), else write a private part beside the live one.
        if delete_dead_part(store, stream_key, part_id) is not None:
            lease = _try_create(store, stream_key, part_id)
        if lease is None:
            private = f"{part_id}.{uuid.uuid4().hex[:8]}"
            lease = _try_create(store, stream_key, private)
            if lease is None:  # a fresh random id cannot be held by anyone
                raise RuntimeError(f"cannot create lease for part {private}")
    if is_committed(store, stream_key, lease.part_id):
        # Committed between our first look and our lease (its writer just finished).
        _drop_lease_file(store, stream_key, lease.part_id)
        raise PartCommitted(stream_key, lease.part_id)
    HEARTBEAT.add(store.fs, lease_path(store, stream_key, lease.part_id), lease)
    return lease


def check_held(store: FeatureStore, lease: Lease) -> None:
    """Raise LeaseLost unless the lease file is still this writer's."""
    path = lease_path(store, lease.stream_key, lease.part_id)
    current = read_lease(store, lease.stream_key, lease.part_id)
    if current is None or current.token != lease.token or path in HEARTBEAT.lost:
        raise LeaseLost(f"part {lease.part_id} of stream {lease.stream_key}: lease lost "
                        "(the writer stalled past its TTL and the part was pruned)")


def release(store: FeatureStore, lease: Lease) -> None:
    HEARTBEAT.remove(lease_path(store, lease.stream_key, lease.part_id))
    _drop_lease_file(store, lease.stream_key, lease.part_id)


def _drop_lease_file(store: FeatureStore, stream_key: str, part_id: str) -> None:
    remove(store.fs, lease_path(store, stream_key, part_id))


# The one deletion path ----------------------------------------------------------------------


def delete_own_part(store: FeatureStore, lease: Lease) -> None:
    """The lease holder abandons its part: delete the rows, then the lease."""
    check_held(store, lease)
    store.backend.delete_part(lease.stream_key, lease.part_id)
    release(store, lease)


def delete_dead_part(store: FeatureStore, stream_key: str, part_id: str,
                     own_run_id: str | None = None) -> str | None:
    """Delete an uncommitted part whose writer is provably dead; return why, or None if kept.

    Never deletes a committed part or one whose writer may still be alive.
    """
    if is_committed(store, stream_key, part_id):
        return None
    lease = read_lease(store, stream_key, part_id)
    taken: Lease | None = None
    if lease is None:
        # No lease: a writer of an older layout died, or one is aborting. Take the lease so no
        # new writer starts on this path while we delete; if we cannot, someone else has it.
        taken = _try_create(store, stream_key, part_id)
        if taken is None:
            return None
        reason = "no lease and no manifest"
    else:
        reason = lease.dead_reason(own_run_id)
        if reason is None:
            return None
        # Re-read just before deleting: the same dead lease must still be there.
        again = read_lease(store, stream_key, part_id)
        if again is None or again.token != lease.token:
            return None
    if is_committed(store, stream_key, part_id):  # its writer committed meanwhile
        if taken is not None:
            _drop_lease_file(store, stream_key, part_id)
        return None
    store.backend.delete_part(stream_key, part_id)
    _drop_lease_file(store, stream_key, part_id)
    log.info("deleted uncommitted part %s of %s: %s", part_id, stream_key, reason)
    return reason


def prune_dead_parts(store: FeatureStore, stream_key: str,
                     own_run_id: str | None = None) -> dict[str, str]:
    """Delete every uncommitted part of a stream whose writer is provably dead.

    Returns {part_id: reason} of what was deleted; stale leases without any array go too.
    """
    committed = set(store.committed_parts(stream_key))
    deleted: dict[str, str] = {}
    for part in store.backend.list_parts(stream_key):
        if part in committed:
            continue
        reason = delete_dead_part(store, stream_key, part, own_run_id)
        if reason is not None:
            deleted[part] = reason
    arrays = set(store.backend.list_parts(stream_key))
    for name in store.list_fresh(lease_dir(store, stream_key)):
        part = name[len("part-"):-len(".json")] if name.endswith(".json") else None
        if part is None or part in arrays:
            continue
        lease = read_lease(store, stream_key, part)
        if lease is not None and (lease.dead_reason(own_run_id) or part in committed):
            _drop_lease_file(store, stream_key, part)
    return deleted


def live_lease(store: FeatureStore, stream_key: str, part_id: str) -> Lease | None:
    """The part's lease if its writer may still be alive (verify calls such a part in progress)."""
    lease = read_lease(store, stream_key, part_id)
    return lease if lease is not None and lease.dead_reason() is None else None


def superseded_parts(manifests: list[PartManifest]) -> list[str]:
    """Committed parts holding clips, every one of which an earlier commit also holds."""
    winner: dict[str, str] = {}
    for manifest in sorted(manifests, key=lambda m: m.commit_order()):
        for entry in manifest.clips:
            winner.setdefault(entry.clip_id, manifest.part_id)
    return sorted(m.part_id for m in manifests
                  if m.clips and all(winner[e.clip_id] != m.part_id for e in m.clips))


def reclaim_superseded_parts(store: FeatureStore, stream_key: str) -> list[str]:
    """Delete committed parts that serve no clip (racing runs committed their clips earlier).

    Returns the part ids deleted. A part whose lease someone holds is left for a later call.
    """
    deleted = []
    for part_id in superseded_parts(store.manifests(stream_key)):
        lease = _try_create(store, stream_key, part_id)
        if lease is None:
            continue  # another finalize is reclaiming it (or a writer aborts there)
        try:
            remove(store.fs, manifest_path(store, stream_key, part_id))
            store.backend.delete_part(stream_key, part_id)
        finally:
            _drop_lease_file(store, stream_key, part_id)
        store.forget_part(stream_key, part_id)
        log.info("deleted part %s of %s: every clip in it was committed earlier by another part",
                 part_id, stream_key)
        deleted.append(part_id)
    return deleted
