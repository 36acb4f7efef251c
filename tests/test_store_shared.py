"""A store that many runs share: no run's clean-up deletes another live run's data, a clip is
committed at most once, and `verify` says whether a stream is complete.

Writers here are separate processes (as two `affect extract` runs are), writing parts large
enough that rows reach the disk (zarr chunks flushed, the HDF5 file growing) long before the
commit.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from features_store import StreamInfo, open_store, verify
from features_store import commit as protocol

BACKENDS = ["x.zarr", "x.h5"]
DIM = 256  # float32: 2048-row chunks; the zarr writer flushes 8 chunks (16384 rows) per call
ROWS = 9000  # per clip: two clips flush a zarr block; each write lands in the HDF5 file

# Another run's writer: commits nothing until told to, after its rows are on disk.
SLOW_WRITER = """
import os, sys, time
import numpy as np
from features_store import open_store

url, key, part_id, go_file, first = sys.argv[1:6]
store = open_store(url)
with store.part_writer(key, part_id) as writer:
    for i in range(int(first), int(first) + 2):
        writer.write_clip(f"clip{i:02d}", np.full((ROWS, DIM), i, "float32"))
    print("flushed", writer.part_id, flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.05)
    writer.write_clip(f"clip{int(first) + 2:02d}", np.full((ROWS, DIM), int(first) + 2, "float32"))
print("committed", flush=True)
""".replace("ROWS", str(ROWS)).replace("DIM", str(DIM))


def rows_of(i: int) -> np.ndarray:
    return np.full((ROWS, DIM), i, "float32")


def new_store(url: str):
    store = open_store(url)
    audio = store.create_stream(StreamInfo(name="audio-enc", dim=DIM, dtype="float32"))
    video = store.create_stream(StreamInfo(name="video-enc", dim=DIM, dtype="float32"))
    return store, audio, video


def start_slow_writer(url: str, key: str, part_id: str, go_file: str, first: int):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, url, key, part_id, go_file,
                             str(first)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    if not line.startswith("flushed"):
        proc.kill()
        pytest.fail(f"writer did not start: {line!r} {proc.stderr.read()}")
    return proc, line.split()[1]


def finish(proc) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip().endswith("committed")


@pytest.mark.parametrize("name", BACKENDS)
def test_one_runs_clean_up_never_deletes_another_live_runs_part(tmp_path, name):
    url = str(tmp_path / name)
    store, audio, video = new_store(url)
    go = str(tmp_path / "go")
    # Run B extracts video: its part's rows are on disk, not yet committed.
    other, other_part = start_slow_writer(url, video.key, "b0", go, first=10)
    location = store.backend.part_location(video.key, other_part)
    assert other_part in store.backend.list_parts(video.key)
    # Run A extracts audio, and more clips of the same video stream, then cleans up as
    # `affect extract` does at its end.
    with store.part_writer(audio.key, "a0") as writer:
        writer.write_clip("clip00", rows_of(0))
    with store.part_writer(video.key, "a1") as writer:
        writer.write_clip("clip01", rows_of(1))
    store.finalize(prune_orphans=True)
    assert other_part in store.backend.list_parts(video.key), f"{location} was deleted"
    # B goes on and commits; the store then holds both runs' work, whole.
    open(go, "w").close()
    finish(other)
    reader = open_store(url, mode="r")
    assert reader.committed_clip_ids(video) == {"clip01", "clip10", "clip11", "clip12"}
    for i in (10, 11, 12, 1):
        assert np.array_equal(reader.read_clip(video, f"clip{i:02d}"), rows_of(i)), i
    assert np.array_equal(reader.read_clip(audio, "clip00"), rows_of(0))
    report = verify(reader)
    assert report.ok, report.problems


@pytest.mark.parametrize("name", BACKENDS)
def test_a_second_writer_of_the_same_part_id_never_touches_the_live_ones_rows(tmp_path, name):
    url = str(tmp_path / name)
    store, _, video = new_store(url)
    go = str(tmp_path / "go")
    other, other_part = start_slow_writer(url, video.key, "t0", go, first=20)
    assert other_part == "t0"
    # The same task (same part id) started again elsewhere while the first still runs.
    with store.part_writer(video.key, "t0") as writer:
        assert writer.part_id.startswith("t0.")  # a private part beside the live one
        writer.write_clip("clip30", rows_of(30))
    open(go, "w").close()
    finish(other)
    store.refresh()
    assert store.part_committed(video, "t0")
    assert store.committed_clip_ids(video) == {"clip20", "clip21", "clip22", "clip30"}
    assert np.array_equal(store.read_clip(video, "clip21"), rows_of(21))
    assert verify(store).ok


def test_a_committed_part_is_never_reopened(tmp_path):
    store, audio, _ = new_store(str(tmp_path / "x.zarr"))
    with store.part_writer(audio, "p0") as writer:
        writer.write_clip("clip00", rows_of(0))
    assert store.part_committed(audio, "p0") and not store.part_committed(audio, "p1")
    with pytest.raises(protocol.PartCommitted):
        store.part_writer(audio, "p0")
    assert np.array_equal(store.read_clip(audio, "clip00"), rows_of(0))


def test_a_dead_writers_part_is_pruned_and_its_task_id_taken_over(tmp_path):
    """A killed writer (pid gone on this host) is provably dead: prune and rerun reuse its id."""
    url = str(tmp_path / "x.zarr")
    store, audio, _ = new_store(url)
    go = str(tmp_path / "never")
    dead, part = start_slow_writer(url, audio.key, "k0", go, first=0)
    dead.kill()
    dead.wait(timeout=30)
    assert protocol.read_lease(store, audio.key, "k0") is not None  # left behind by the kill
    with store.part_writer(audio, "k0") as writer:  # the rerun takes its id over
        assert writer.part_id == "k0"
        writer.write_clip("clip00", rows_of(0))
    assert store.committed_parts(audio) == ["k0"]
    assert np.array_equal(store.read_clip(audio, "clip00"), rows_of(0))
    assert verify(store).ok


def test_an_expired_lease_is_dead_and_a_fresh_one_is_alive(tmp_path, monkeypatch):
    store, audio, _ = new_store(str(tmp_path / "x.zarr"))
    monkeypatch.setenv("AFFECT_LEASE_TTL_S", "0.6")
    writer = store.part_writer(audio, "e0")
    writer.write_clip("clip00", rows_of(0))
    lease = protocol.read_lease(store, audio.key, "e0")
    assert lease.dead_reason() is None
    # The writer's host is another machine that stopped renewing (a dead dask worker).
    lease.host, lease.heartbeat = "elsewhere", time.time() - 5
    assert "expired" in lease.dead_reason()
    # While the process lives, its heartbeat keeps the lease fresh well past the TTL.
    time.sleep(1.5)
    renewed = protocol.read_lease(store, audio.key, "e0")
    assert time.time() - renewed.heartbeat < 0.6 and renewed.dead_reason() is None
    other = open_store(store.url)  # another run's clean-up
    assert other.finalize(prune_orphans=True) == {}
    writer.commit()
    assert protocol.read_lease(store, audio.key, "e0") is None


def test_a_clip_committed_by_two_runs_is_kept_once_first_commit_wins(tmp_path):
    url = str(tmp_path / "x.zarr")
    store, audio, _ = new_store(url)
    late = open_store(url).part_writer(audio.key, "r1")  # run 2 starts on clips 0 and 1
    late.write_clip("clip00", rows_of(100))
    late.write_clip("clip01", rows_of(1))
    with store.part_writer(audio, "r0") as first:  # run 1 commits clip 0 first
        first.write_clip("clip00", rows_of(0))
    manifest = late.commit()
    assert manifest.discarded == ["clip00"] and [c.clip_id for c in manifest.clips] == ["clip01"]
    store.refresh()
    assert np.array_equal(store.read_clip(audio, "clip00"), rows_of(0))
    assert store.load_stream(audio).clip_ids == ["clip00", "clip01"]
    report = verify(store)
    assert report.ok and (report.clips, report.parts) == (2, 2), report.problems


def test_racing_commits_of_one_clip_resolve_to_the_earliest_everywhere(tmp_path):
    """Two commits at the same instant both keep the clip: readers, finalize and verify agree
    on the earliest commit (then part id) and nobody sees two copies."""
    url = str(tmp_path / "x.zarr")
    store, audio, _ = new_store(url)
    for part, value, when in (("z9", 9, 1000.0), ("a1", 1, 2000.0)):
        writer = store.part_writer(audio, part)
        writer.write_clip("clip00", rows_of(value))
        writer.store.committed_clip_ids = lambda _key: set()  # both see nothing committed yet
        manifest = writer.commit()
        del writer.store.committed_clip_ids
        data = store._manifest_cache[(audio.key, part)].to_dict() | {"commit_time": when}
        path = protocol.manifest_path(store, audio.key, manifest.part_id)
        store.fs.rm(path)
        store.fs.pipe_file(path, json.dumps(data).encode())
    for reader in (open_store(url, mode="r"), store):
        reader.refresh()
        reader._manifest_cache.clear()
        assert np.array_equal(reader.read_clip(audio, "clip00"), rows_of(9))
        assert reader.load_stream(audio).clip_ids == ["clip00"]
    report = verify(store)
    assert report.ok, report.problems
    assert any("readers use part z9" in note for note in report.notes), report.notes
    # finalize reclaims the copy nobody reads (test_store_reclaim.py); readers are unchanged.
    store.finalize()
    assert np.array_equal(open_store(url, mode="r").read_clip(audio, "clip00"), rows_of(9))
    assert verify(store).ok


def test_verify_tells_a_complete_stream_from_an_incomplete_one(tmp_path):
    store, audio, _ = new_store(str(tmp_path / "x.zarr"))
    store.record_intent(audio, ["clip00", "clip01", "clip02"])
    with store.part_writer(audio, "p0") as writer:
        writer.write_clip("clip00", rows_of(0))
        writer.write_clip("clip01", rows_of(1))
    report = verify(store)
    assert not report.ok and report.missing == {"audio-enc": ["clip02"]}
    assert "incomplete: 1 of 3 intended clip(s) not committed ('clip02')" in report.problems[0]
    store.add_failures([{"clip_id": "clip02", "stage": "decode", "message": "corrupt"}])
    assert verify(store).ok  # a failure in the ledger is accounted for


def test_a_writer_whose_part_was_pruned_never_publishes_a_manifest(tmp_path):
    """A writer that stalled past its TTL and was judged dead must fail at commit, not publish
    a manifest naming rows that are gone."""
    url = str(tmp_path / "x.zarr")
    store, audio, _ = new_store(url)
    writer = store.part_writer(audio, "s0")
    writer.write_clip("clip00", rows_of(0))
    # Another run's clean-up judged it dead (here: as its own finished run) and removed it.
    pruner = open_store(url, run_id=store.run_id)
    assert protocol.delete_dead_part(pruner, audio.key, "s0", own_run_id=store.run_id)
    with pytest.raises(protocol.LeaseLost):  # it notices by its next flush's worth of rows
        writer.write_clip("clip01", rows_of(1))
    with pytest.raises(protocol.LeaseLost):
        writer.commit()
    assert not store.part_committed(audio, "s0")
    assert "s0" not in store.backend.list_parts(audio.key)
    assert verify(store).ok


@pytest.mark.slow  # two real extraction runs at once: a minute or more on two cores
@pytest.mark.parametrize("name", BACKENDS)
def test_two_affect_extract_runs_on_one_store_at_once_both_complete(tmp_path, name):
    """One person extracts audio while another extracts video, into the same store."""
    from pipelines.synthetic.av_writer import write_video

    rng = np.random.default_rng(0)
    clips = []
    for i in range(8):
        frames = rng.integers(0, 255, size=(40, 48, 48, 3)).astype(np.uint8)
        tone = (0.3 * np.sin(np.arange(25600) * (0.05 + 0.01 * i))).astype(np.float32)
        write_video(tmp_path / f"v{i}.mp4", frames, fps=25, audio=tone)
        clips.append({"clip_id": f"v{i}", "video": str(tmp_path / f"v{i}.mp4")})
    clips_file = tmp_path / "clips.jsonl"
    clips_file.write_text("".join(json.dumps(c) + "\n" for c in clips))
    url = str(tmp_path / name)
    open_store(url)  # both runs open an existing store
    def start(encoder: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines", "extract", "--clips", str(clips_file), "--store",
             url, "--encoders", encoder, "--weights", "random", "--reduced", "--device", "cpu",
             "--clips-per-part", "1", "--decode-workers", "1", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # The long video run is under way (a part committed, the next one being written) when a
    # short audio run starts, finishes and cleans up.
    video = start("hsemotion-enet-b0")
    deadline = time.time() + 600
    while time.time() < deadline and video.poll() is None:
        if any(p.endswith(".json") for p in
               glob.glob(os.path.join(url, "streams", "*", "manifests", "*"))):
            break
        time.sleep(0.05)
    audio = start("vggish", "--limit", "2")
    for run in (audio, video):
        out, err = run.communicate(timeout=900)
        assert run.returncode == 0, err[-2000:]
    store = open_store(url, mode="r")
    assert len(store.streams()) == 2
    for info in store.streams():
        expected = 2 if info.alias.startswith("vggish") else len(clips)
        assert len(store.committed_clip_ids(info)) == expected, info.alias
    report = verify(store)
    assert report.ok, report.problems
