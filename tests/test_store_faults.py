"""When things go wrong: a writer killed mid-part, damaged files, bad input to import.

Each story checks that readers never see half-written data and that `verify` (or the failing
call) names the file that is wrong, on both backends.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from features_store import StreamInfo, UserError, open_store, verify
from features_store.exchange import import_folder

BACKENDS = ["x.zarr", "x.h5"]
DIM = 256  # float32: 2048-row chunks; a zarr writer flushes 8 chunks (16384 rows) at a time
PARTS = {"p0": range(0, 4), "p1": range(4, 12), "p2": range(12, 15)}

# An extraction job as a separate program: it skips committed parts (as a rerun does) and,
# when told to be slow, dawdles inside part p1 so the test can kill it there.
WRITER = """
import sys, time
import numpy as np
from features_store import open_store

url, key, slow = sys.argv[1], sys.argv[2], sys.argv[3] == "slow"
parts = {"p0": range(0, 4), "p1": range(4, 12), "p2": range(12, 15)}
store = open_store(url)
for part_id, numbers in parts.items():
    if part_id in store.committed_parts(key):
        continue
    with store.part_writer(key, part_id) as writer:
        for i in numbers:
            rows = np.random.default_rng(i).standard_normal((3000, DIM)).astype("float32")
            writer.write_clip(f"clip{i:02d}", rows, t0=0.5 * i)
            print(part_id, i, flush=True)
            if slow and part_id == "p1":
                time.sleep(0.5)
print("done", flush=True)
""".replace("DIM", str(DIM))


def clip_rows(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((3000, DIM)).astype("float32")


def run_writer(url: str, key: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WRITER, url, key, "fast"], capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "done"


def new_store(url: str, **kwargs):
    store = open_store(url, **kwargs)
    info = store.create_stream(StreamInfo(name="enc", dim=DIM, frame_shift_s=0.04))
    return store, info


@pytest.mark.parametrize("name", BACKENDS)
def test_writer_killed_mid_part_leaves_an_orphan_that_a_rerun_replaces(tmp_path, name):
    url = str(tmp_path / name)
    store, info = new_store(url)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, info.key, "slow"], stdout=subprocess.PIPE, text=True
    )
    try:
        # Wait until part p1 holds six clips (18000 rows: some reached the disk), then kill.
        for line in writer.stdout:
            if line.split() == ["p1", "9"]:
                break
        else:
            pytest.fail(f"writer ended early with code {writer.wait()}")
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=60)
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL

    # Readers see part p0 and nothing of p1, although p1's array is on disk.
    reader = open_store(url, mode="r")
    assert reader.committed_parts("enc") == ["p0"]
    assert "p1" in reader.backend.list_parts(info.key)
    if name.endswith(".zarr"):
        assert glob.glob(f"{reader.backend.part_location(info.key, 'p1')}/c/*/0")
    assert reader.committed_clip_ids("enc") == {f"clip{i:02d}" for i in PARTS["p0"]}
    assert not reader.has_clip("enc", "clip04")
    with pytest.raises(UserError, match="no clip 'clip04'"):
        reader.read_clip("enc", "clip04")
    assert reader.load_stream("enc").clip_ids == [f"clip{i:02d}" for i in PARTS["p0"]]
    for i in PARTS["p0"]:
        assert np.array_equal(reader.read_clip("enc", f"clip{i:02d}"), clip_rows(i))

    # verify reports exactly the orphan, naming its file, and nothing else.
    report = verify(reader)
    orphan = store.backend.part_location(info.key, "p1")
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith(f"{orphan}: part without manifest")

    # Rerunning the same job with the same part ids completes the stream ...
    run_writer(url, info.key)
    store.finalize(prune_orphans=True)
    # ... and the result equals a run that was never interrupted.
    clean_url = str(tmp_path / ("clean-" + name))
    clean_store, _ = new_store(clean_url)
    run_writer(clean_url, info.key)
    clean_store.finalize(prune_orphans=True)

    resumed = open_store(url, mode="r")
    clean = open_store(clean_url, mode="r")
    assert resumed.committed_parts("enc") == clean.committed_parts("enc") == ["p0", "p1", "p2"]
    assert resumed.backend.list_parts(info.key) == ["p0", "p1", "p2"]
    assert resumed.shape_manifest("enc") == clean.shape_manifest("enc")
    assert len(resumed.shape_manifest("enc")) == 15
    a, b = resumed.load_stream("enc"), clean.load_stream("enc")
    assert a.clip_ids == b.clip_ids and a.data.tobytes() == b.data.tobytes()
    assert np.array_equal(a.clip("clip07"), clip_rows(7))
    report = verify(resumed)
    assert report.ok, report.problems
    assert (report.parts, report.clips, report.rows) == (3, 15, 15 * 3000)


def test_prune_removes_an_orphan_part_that_no_rerun_claims(tmp_path):
    store, info = new_store(str(tmp_path / "x.zarr"))
    with store.part_writer(info, "p0") as writer:
        writer.write_clip("a", clip_rows(0))
    # A writer process that flushes its rows and then dies without committing.
    abandon = (
        "import os, sys, numpy as np\n"
        "from features_store import open_store\n"
        "w = open_store(sys.argv[1]).part_writer(sys.argv[2], 'gone')\n"
        f"w.write_clip('b', np.zeros((3000, {DIM}), 'float32'))\n"
        "w.array.close()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", abandon, store.url, info.key], check=True, timeout=120)
    assert sorted(store.backend.list_parts(info.key)) == ["gone", "p0"]
    assert not verify(store).ok
    store.finalize(prune_orphans=True)
    assert store.backend.list_parts(info.key) == ["p0"]
    assert verify(store).ok


# Damaged files ------------------------------------------------------------------------------


def truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def store_with_chunks(url: str, **kwargs):
    store, info = new_store(url, **kwargs)
    with store.part_writer(info, "p0") as writer:
        for i in range(7):  # 21000 rows: 10 chunks of 2048 rows and one of 520
            writer.write_clip(f"clip{i:02d}", clip_rows(i))
    store.finalize()
    return store, info


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_truncated_zarr_chunk_is_named_by_verify_and_by_readers(tmp_path, compression):
    url = str(tmp_path / "x.zarr")
    store, info = store_with_chunks(url, compression=compression)
    damaged = f"{url}/streams/{info.key}/parts/part-p0/c/5/0"  # rows 10240..12288
    assert len(glob.glob(f"{url}/streams/{info.key}/parts/part-p0/c/*/0")) == 11
    truncate(damaged)

    report = verify(open_store(url, mode="r"))
    # Both raw chunks (wrong byte count) and zstd chunks (checksummed frames) are caught.
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith(f"{damaged}: unreadable chunk")
    # A reader that meets the damage says which part file to look at; undamaged clips still read.
    reader = open_store(url, mode="r")
    assert np.array_equal(reader.read_clip("enc", "clip00"), clip_rows(0))
    part_dir = store.backend.part_location(info.key, "p0")
    with pytest.raises(UserError, match=part_dir):
        reader.read_clip("enc", "clip03")  # rows 9000..12000 reach into the damaged chunk


def test_deleted_zarr_chunk_is_named_by_verify(tmp_path):
    """A partial copy of a store loses chunk files; zarr alone would read them as zeros."""
    url = str(tmp_path / "x.zarr")
    store, info = store_with_chunks(url)
    lost = f"{url}/streams/{info.key}/parts/part-p0/c/3/0"
    os.remove(lost)
    report = verify(open_store(url, mode="r"), check_values=False)
    assert report.problems == [f"{lost}: chunk file missing (it would read as zeros)"]


def test_truncated_hdf5_part_is_named_by_verify_and_by_readers(tmp_path):
    url = str(tmp_path / "x.h5")
    store, info = store_with_chunks(url)
    part = store.backend.part_location(info.key, "p0")
    assert os.path.isfile(part)
    truncate(part)
    report = verify(open_store(url, mode="r"))
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith(f"{part}: cannot open array")
    with pytest.raises(UserError, match=part):
        open_store(url, mode="r").read_clip("enc", "clip00")


def manifest_path(store, info, part: str = "p0") -> str:
    return f"{store.path}/streams/{info.key}/manifests/part-{part}.json"


@pytest.mark.parametrize("name", BACKENDS)
def test_edited_manifest_row_count_is_named(tmp_path, name):
    store, info = store_with_chunks(str(tmp_path / name))
    path = manifest_path(store, info)
    with open(path) as f:
        manifest = json.load(f)
    manifest["n_rows"] += 5
    manifest["clips"][-1]["n_rows"] += 5  # the last clip now claims rows the array lacks
    with open(path, "w") as f:
        json.dump(manifest, f)
    report = verify(open_store(store.url, mode="r"))
    # The merged index, written before the edit, no longer agrees with the manifest either.
    index = [p for p in report.problems if "index.json" in p]
    problems = [p for p in report.problems if p not in index]
    assert len(problems) == 2 and len(index) == 1, report.problems
    assert all(p.startswith(f"{path}: ") for p in problems)
    assert "manifest says 21005 rows" in problems[0]
    assert "clip 'clip06' rows 18000:21005 out of range of 21000 rows" in problems[1]
    assert "'clip06'" in index[0]


@pytest.mark.parametrize("name", BACKENDS)
def test_manifest_that_is_not_json_is_named(tmp_path, name):
    store, info = store_with_chunks(str(tmp_path / name))
    path = manifest_path(store, info)
    with open(path, "w") as f:
        f.write('{"part_id": "p0", "n_rows": 21')  # cut off mid-write by a careless editor
    os.remove(f"{store.path}/streams/{info.key}/index.json")  # force a rebuild from manifests
    report = verify(open_store(store.url, mode="r"))
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith(f"{path}: unreadable manifest")
    with pytest.raises(UserError, match=f"{path}: not valid JSON"):
        open_store(store.url, mode="r").read_clip("enc", "clip00")


@pytest.mark.parametrize("name", BACKENDS)
def test_nan_values_are_reported_with_their_location(tmp_path, name):
    store, info = new_store(str(tmp_path / name))
    bad = clip_rows(1)
    bad[17, 3] = np.nan
    bad[20, 0] = np.inf
    with store.part_writer(info, "p0") as writer:
        writer.write_clip("good", clip_rows(0))
        writer.write_clip("bad", bad)
    report = verify(store)
    assert len(report.problems) == 1, report.problems
    part = store.backend.part_location(info.key, "p0")
    assert report.problems[0].startswith(part)
    assert "2 NaN/Inf value(s), first at row 3017" in report.problems[0]
    assert verify(store, check_values=False).ok


@pytest.mark.parametrize("name", BACKENDS)
def test_clip_missing_from_a_stream_that_claims_every_clip(tmp_path, name):
    store = open_store(str(tmp_path / name))
    store.add_clips({"clip_id": c, "split": "train"} for c in ("a", "b", "c", "d"))
    info = store.create_stream(StreamInfo(name="enc", dim=4, claims={"all": True}))
    partial = store.create_stream(StreamInfo(name="other", dim=4))  # claims nothing
    with store.part_writer(info, "p0") as writer:
        writer.write_clip("a", np.ones((3, 4)))
        writer.write_clip("c", np.ones((3, 4)))
    with store.part_writer(partial, "p0") as writer:
        writer.write_clip("a", np.ones((3, 4)))
    # Clip d failed at extraction and is in the ledger: excused. Clip b is simply missing.
    store.add_failures([{"clip_id": "d", "stream": info.key, "stage": "decode", "message": "x"}])
    report = verify(store)
    assert report.problems == [
        f"{store.path}/streams/{info.key}: clip 'b' of the clip table is missing from stream enc"
    ]


# Bad input to import -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_array,complaint",
    [
        (np.array(["happy", "sad"]), "is not numeric"),
        (np.array([{"v": 1}, None], dtype=object), "cannot read"),
    ],
    ids=["strings", "objects"],
)
def test_import_of_a_non_numeric_array_names_the_file(tmp_path, bad_array, complaint):
    folder = tmp_path / "features"
    (folder / "spk1").mkdir(parents=True)
    np.save(folder / "spk1" / "a.npy", np.ones((4, 3), np.float32))
    bad = folder / "spk1" / "b.npy"
    np.save(bad, bad_array, allow_pickle=True)
    store = open_store(str(tmp_path / "x.zarr"))
    with pytest.raises(UserError) as caught:
        import_folder(store, str(folder), "imported", 0.04)
    message = str(caught.value)
    assert message.startswith(f"{bad}: ") and complaint in message and "\n" not in message
    # Nothing half-imported became visible.
    assert store.committed_clip_ids("imported") == set()


def test_import_of_mismatched_dims_names_the_file(tmp_path):
    folder = tmp_path / "features"
    folder.mkdir()
    np.save(folder / "a.npy", np.ones((4, 3), np.float32))
    np.save(folder / "b.npy", np.ones((4, 5), np.float32))
    with pytest.raises(UserError, match=f"{folder / 'b.npy'}: dim 5, the other files have 3"):
        import_folder(open_store(str(tmp_path / "x.h5")), str(folder), "imported", 0.04)

