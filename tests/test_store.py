"""The feature store as its users meet it: write ragged clips, read them back exactly, read
windows and aligned timelines, and train from it through a torch DataLoader.

Every story runs on both backends: a Zarr v3 store (`x.zarr`) and an HDF5 store (`x.h5`).
"""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest

from features_store import ClipShape, StreamInfo, open_store, verify
from features_store.backends.base import chunk_rows_for

BACKENDS = ["x.zarr", "x.h5"]


def clip_rows(i: int, dim: int, dtype: str, n: int | None = None) -> np.ndarray:
    """The rows of clip `i`: the same in every process (concurrent writers regenerate them)."""
    rng = np.random.default_rng(1000 + i)
    n = 20 + (37 * i) % 150 if n is None else n
    return rng.standard_normal((n, dim)).astype(dtype)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _no_data_reads(*args, **kwargs):
    raise AssertionError("a part array was opened")


def ramp_stream(store, name: str, frame_shift_s: float, clips: dict[str, tuple[float, int]]):
    """A 2-D stream whose row j of every clip is [j, 10 j]: values are easy to check by hand."""
    info = store.create_stream(
        StreamInfo(name=name, dim=2, dtype="float32", frame_shift_s=frame_shift_s)
    )
    with store.part_writer(info, "p0") as writer:
        for clip_id, (t0, n) in clips.items():
            j = np.arange(n, dtype=np.float32)
            writer.write_clip(clip_id, np.stack([j, 10 * j], axis=1), t0=t0)
    return info


# Writing and reading back ------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype,dim", [("float16", 512), ("float32", 256)])
def test_ragged_clips_round_trip_bit_for_bit(tmp_path, name, dtype, dim):
    store = open_store(str(tmp_path / name))
    info = store.create_stream(StreamInfo(name="enc", dim=dim, dtype=dtype, frame_shift_s=0.04))
    chunk = chunk_rows_for(dim, dtype)
    expected = {
        "a/empty-first": clip_rows(0, dim, dtype, n=0),
        "a/short": clip_rows(1, dim, dtype, n=3),
        "a/empty-middle": clip_rows(2, dim, dtype, n=0),
        "a/exactly-one-chunk": clip_rows(3, dim, dtype, n=chunk),
        "a/ragged": clip_rows(4, dim, dtype),
    }
    with store.part_writer(info, "p0") as writer:
        for clip_id, rows in expected.items():
            writer.write_clip(clip_id, rows)
    # A clip spanning several chunks arrives in uneven pieces, as an encoder streams it out.
    long_clip = clip_rows(5, dim, dtype, n=2 * chunk + 777)
    with store.part_writer(info, "p1") as writer:
        writer.begin_clip("b/long", t0=1.5)
        for lo in range(0, len(long_clip), 333):
            writer.append(long_clip[lo : lo + 333])
        writer.end_clip()
        writer.write_clip("b/empty-last", clip_rows(6, dim, dtype, n=0))
    expected["b/long"] = long_clip
    expected["b/empty-last"] = clip_rows(6, dim, dtype, n=0)
    # A part holding only an empty clip has an array of zero rows.
    with store.part_writer(info, "p2") as writer:
        writer.write_clip("c/only-empty", clip_rows(7, dim, dtype, n=0))
    expected["c/only-empty"] = clip_rows(7, dim, dtype, n=0)

    # Readers see committed parts before and after finalize, in a fresh process-like handle.
    for finalized in (False, True):
        if finalized:
            store.finalize()
        reader = open_store(str(tmp_path / name), mode="r")
        assert reader.committed_clip_ids("enc") == set(expected)
        for clip_id, rows in expected.items():
            assert same_bits(reader.read_clip("enc", clip_id), rows), clip_id
    shapes = {c.clip_id: c for c in reader.shape_manifest("enc")}
    assert shapes["b/long"].t0 == 1.5 and shapes["b/long"].shape == (2 * chunk + 777, dim)
    assert same_bits(reader.load_stream("enc").clip("b/long"), long_clip)
    report = verify(reader)
    assert report.ok, report.problems
    assert report.rows == sum(len(r) for r in expected.values())


@pytest.mark.parametrize("name", BACKENDS)
def test_writer_copies_rows_so_the_caller_may_reuse_its_buffer(tmp_path, name):
    store = open_store(str(tmp_path / name))
    info = store.create_stream(StreamInfo(name="enc", dim=4))
    buffer = np.ones((10, 4), np.float32)  # an encoder's output buffer, refilled per batch
    with store.part_writer(info, "p0") as writer:
        writer.begin_clip("a")
        writer.append(buffer)
        buffer[:] = 7
        writer.append(buffer)
        writer.end_clip()
    assert store.read_clip("enc", "a")[:, 0].tolist() == [1] * 10 + [7] * 10
    # A part of zeros (silence, padding) is stored too: verify finds every chunk present.
    with store.part_writer(info, "p1") as writer:
        writer.write_clip("silence", np.zeros((5, 4), np.float32))
    assert store.read_clip("enc", "silence").tolist() == [[0.0] * 4] * 5
    assert verify(store).ok


@pytest.mark.parametrize("name", BACKENDS)
def test_store_on_fsspec_memory_filesystem(name):
    url = f"memory://affect-tests/{os.getpid()}/{name}"
    store = open_store(url)
    try:
        info = store.create_stream(StreamInfo(name="enc", dim=16, dtype="float16"))
        expected = {f"clip{i}": clip_rows(i, 16, "float16") for i in range(5)}
        expected["clip-empty"] = clip_rows(9, 16, "float16", n=0)
        with store.part_writer(info, "p0") as writer:
            for clip_id, rows in expected.items():
                writer.write_clip(clip_id, rows)
        store.add_clips({"clip_id": c, "split": "train"} for c in expected)
        store.finalize()

        reader = open_store(url, mode="r")
        assert reader.backend_name == ("hdf5" if name.endswith(".h5") else "zarr")
        assert reader.clip_ids("train") == sorted(expected)
        for clip_id, rows in expected.items():
            assert same_bits(reader.read_clip("enc", clip_id), rows)
        data, mask = reader.read_windows("enc", [("clip1", 5, 8), ("clip-empty", 0, 8)])
        assert same_bits(data[0], expected["clip1"][5:13]) and mask[0].all()
        assert not mask[1].any() and not data[1].any()
        assert verify(reader).ok
    finally:
        store.fs.rm(store.path, recursive=True)


def _write_part(url: str, stream_key: str, part_id: str, clip_numbers: list[int], barrier):
    """One extraction worker: owns one part and writes its clips (runs in a spawned process)."""
    store = open_store(url)
    barrier.wait(timeout=60)  # all four start writing at the same moment
    with store.part_writer(stream_key, part_id) as writer:
        for i in clip_numbers:
            writer.write_clip(f"clip{i:03d}", clip_rows(i, 64, "float16"))


@pytest.mark.parametrize("name", BACKENDS)
def test_four_processes_write_parts_of_one_stream_at_once(tmp_path, name):
    url = str(tmp_path / name)
    store = open_store(url)
    info = store.create_stream(StreamInfo(name="enc", dim=64, dtype="float16"))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    workers = [
        ctx.Process(
            target=_write_part, args=(url, info.key, f"w{w}", list(range(w, 40, 4)), barrier)
        )
        for w in range(4)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]

    store.finalize()
    assert sorted(store.committed_parts("enc")) == ["w0", "w1", "w2", "w3"]
    assert store.committed_clip_ids("enc") == {f"clip{i:03d}" for i in range(40)}
    for i in range(40):
        assert same_bits(store.read_clip("enc", f"clip{i:03d}"), clip_rows(i, 64, "float16"))
    report = verify(store)
    assert report.ok, report.problems
    assert (report.parts, report.clips) == (4, 40)
    assert report.rows == sum(len(clip_rows(i, 64, "float16")) for i in range(40))


# Reading: clips, windows, seconds, alignment --------------------------------------------------


@pytest.fixture(params=BACKENDS)
def two_part_store(tmp_path, request):
    """A 25 Hz stream over two parts with clips of various lengths, one of them empty."""
    store = open_store(str(tmp_path / request.param))
    info = store.create_stream(StreamInfo(name="face", dim=8, dtype="float32", frame_shift_s=0.04))
    clips = {f"s{i}": clip_rows(i, 8, "float32") for i in range(6)}
    clips["short"] = clip_rows(50, 8, "float32", n=5)
    clips["empty"] = clip_rows(51, 8, "float32", n=0)
    ids = sorted(clips)
    for part, chosen in (("p0", ids[:4]), ("p1", ids[4:])):
        with store.part_writer(info, part) as writer:
            for clip_id in chosen:
                writer.write_clip(clip_id, clips[clip_id], t0=1.0 if clip_id == "s1" else 0.0)
    store.add_clips({"clip_id": c, "split": "train" if c != "s5" else "val"} for c in ids)
    store.finalize()
    return store, clips


def test_read_one_clip_and_windows_by_frames(two_part_store):
    store, clips = two_part_store
    assert same_bits(store.read_clip("face", "s3"), clips["s3"])
    # A window hanging over both ends of a 5-row clip is zero-padded on both sides.
    window = store.read_window("face", "short", start=-3, length=10)
    assert window.shape == (10, 8)
    assert not window[:3].any() and not window[8:].any()
    assert same_bits(window[3:8], clips["short"])
    assert same_bits(store.read_window("face", "s2", 4, 6), clips["s2"][4:10])


def test_read_window_by_seconds_uses_each_clips_t0(two_part_store):
    store, clips = two_part_store
    # Rows at t0 + 0.04 j inside [0.1, 0.3) are j = 3..7 (times 0.12 .. 0.28).
    assert same_bits(store.read_window_s("face", "s0", 0.1, 0.3), clips["s0"][3:8])
    # Clip s1 starts at t0 = 1.0 s: the same rows sit one second later.
    assert same_bits(store.read_window_s("face", "s1", 1.1, 1.3), clips["s1"][3:8])
    assert store.read_window_s("face", "s1", 0.1, 0.3).shape == (0, 8)


def test_many_windows_in_one_call_across_parts(two_part_store):
    store, clips = two_part_store
    windows = [("s0", 0, 16), ("s5", 10, 16), ("short", 2, 16), ("empty", 0, 16), ("s3", -4, 16)]
    data, mask = store.read_windows("face", windows)
    assert data.shape == (5, 16, 8) and mask.shape == (5, 16)
    for b, (clip_id, start, length) in enumerate(windows):
        rows = clips[clip_id]
        for k in range(length):
            j = start + k
            inside = 0 <= j < len(rows)
            assert mask[b, k] == inside
            assert same_bits(data[b, k], rows[j] if inside else np.zeros(8, np.float32))


@pytest.mark.parametrize("name", BACKENDS)
def test_far_apart_windows_do_not_read_the_rows_between_them(tmp_path, name):
    store = open_store(str(tmp_path / name))
    info = store.create_stream(StreamInfo(name="enc", dim=512, dtype="float16"))
    clips = {f"c{i:02d}": clip_rows(i, 512, "float16", n=1000) for i in range(20)}
    with store.part_writer(info, "p0") as writer:  # one part of 20,000 rows, ~10 chunks
        for clip_id, rows in clips.items():
            writer.write_clip(clip_id, rows)
    reader = store._reader(info.key, "p0")
    rows_read = []
    real_read = reader.read
    reader.read = lambda start, stop: rows_read.append(stop - start) or real_read(start, stop)

    # Random training windows, 4,000 rows apart, plus two that overlap one another.
    windows = [(f"c{i:02d}", 100, 64) for i in range(0, 20, 4)] + [("c19", 0, 64), ("c19", 32, 64)]
    data, mask = store.read_windows(info, windows)
    for b, (clip_id, start, n) in enumerate(windows):
        assert same_bits(data[b], clips[clip_id][start : start + n]) and mask[b].all()
    assert sum(rows_read) == 5 * 64 + 96  # each window or cluster of windows, nothing between


def test_shape_manifest_comes_from_metadata_alone(two_part_store, monkeypatch):
    store, clips = two_part_store

    fresh = open_store(store.url, mode="r")
    monkeypatch.setattr(fresh.backend, "part_reader", _no_data_reads)
    shapes = fresh.shape_manifest("face")
    assert all(isinstance(s, ClipShape) for s in shapes)
    assert {s.clip_id: s.shape for s in shapes} == {c: (len(r), 8) for c, r in clips.items()}
    assert {s.clip_id: s.t0 for s in shapes}["s1"] == 1.0
    assert {s.part_id for s in shapes} == {"p0", "p1"}


@pytest.mark.parametrize("name", BACKENDS)
def test_read_aligned_puts_two_rates_on_one_timeline(tmp_path, name):
    store = open_store(str(tmp_path / name))
    # Video at 25 Hz from t = 0; audio at 50 Hz from t = 5 ms. Row j holds [j, 10 j].
    ramp_stream(store, "video", 0.04, {"c": (0.0, 10)})
    ramp_stream(store, "audio", 0.02, {"c": (0.005, 20)})

    # Target frames at 0, 40, 80, 120, 160 ms.
    out, mask = store.read_aligned("c", ["video", "audio"], 0.04, n_frames=5, method="nearest")
    assert out["video"][:, 0].tolist() == [0, 1, 2, 3, 4]
    # The audio row nearest to 40 k ms is the one at 5 + 20 (2 k) ms: row 2 k.
    assert out["audio"][:, 0].tolist() == [0, 2, 4, 6, 8]
    assert out["audio"][:, 1].tolist() == [0, 20, 40, 60, 80]
    assert mask.all()

    # Mean over [t - 20 ms, t + 20 ms): at 40 ms that is audio rows 1 and 2 (25 and 45 ms).
    out, _ = store.read_aligned("c", ["audio"], 0.04, n_frames=5, method="mean")
    np.testing.assert_allclose(out["audio"][:, 0], [0, 1.5, 3.5, 5.5, 7.5])

    # Linear: 40 ms lies 3/4 of the way from audio row 1 (25 ms) to row 2 (45 ms).
    out, _ = store.read_aligned("c", ["audio"], 0.04, n_frames=5, method="linear")
    np.testing.assert_allclose(out["audio"][:, 0], [0, 1.75, 3.75, 5.75, 7.75])
    # Video upsampled to 50 Hz by linear interpolation: halfway values between rows.
    out, _ = store.read_aligned("c", ["video"], 0.02, n_frames=6, method="linear")
    np.testing.assert_allclose(out["video"][:, 1], [0, 5, 10, 15, 20, 25])

    # One method per stream; the timeline defaults to where every stream still has data.
    out, mask = store.read_aligned(
        "c", ["video", "audio"], 0.04, method={"video": "nearest", "audio": "mean"}
    )
    assert len(mask) == 10 and mask.all()
    np.testing.assert_allclose(out["audio"][1], [1.5, 15])
    # Past the end of the video (10 rows = 400 ms) the mask says so.
    _, mask = store.read_aligned("c", ["video", "audio"], 0.04, n_frames=12)
    assert mask.tolist() == [True] * 10 + [False] * 2


# The training fast path --------------------------------------------------------------------


def test_load_stream_windows_equal_read_windows(two_part_store):
    store, clips = two_part_store
    array = store.load_stream("face")
    rng = np.random.default_rng(0)
    clip_index = rng.integers(0, len(array), size=64)
    starts = rng.integers(-10, 180, size=64)
    fast = array.windows(clip_index, starts, 24)
    fast_mask = array.window_mask(clip_index, starts, 24)
    slow, slow_mask = store.read_windows(
        "face", [(array.clip_ids[c], int(s), 24) for c, s in zip(clip_index, starts)]
    )
    assert same_bits(fast, slow)
    assert np.array_equal(fast_mask, slow_mask)
    # A subset of clips, in the order asked for.
    subset = store.load_stream("face", clip_ids=["s4", "short"])
    assert subset.clip_ids == ["s4", "short"]
    assert same_bits(subset.clip("short"), clips["short"])


def test_load_stream_cache_is_reused_until_a_new_part_is_committed(two_part_store, tmp_path):
    store, clips = two_part_store
    cache = tmp_path / "cache"
    first = store.load_stream("face", cache_dir=str(cache))
    assert isinstance(first.data, np.memmap)
    files = sorted(os.listdir(cache))
    assert len(files) == 1

    # A second run maps the cached file and does not touch the store's arrays.
    again = open_store(store.url, mode="r")
    again.backend.part_reader = _no_data_reads  # any data read would now fail
    second = again.load_stream("face", cache_dir=str(cache))
    assert second.data.filename == first.data.filename
    assert same_bits(second.clip("s2"), clips["s2"])

    # A newly committed part changes the key: the next load copies again and sees the new clip.
    info = store.resolve("face")
    with store.part_writer(info, "p2") as writer:
        writer.write_clip("new", clip_rows(60, 8, "float32"))
    third = open_store(store.url, mode="r").load_stream("face", cache_dir=str(cache))
    assert third.data.filename != first.data.filename
    assert len(os.listdir(cache)) == 2
    assert same_bits(third.clip("new"), clip_rows(60, 8, "float32"))
    assert same_bits(third.clip("s2"), clips["s2"])


def test_window_dataset_in_spawned_dataloader_workers(two_part_store):
    import torch
    from torch.utils.data import DataLoader

    from features_store.torch_data import WindowDataset

    store, clips = two_part_store
    dataset = WindowDataset(store.url, ["face"], window=16, split="train")
    assert "s5" not in dataset.clip_ids and "short" in dataset.clip_ids
    loader = DataLoader(
        dataset, batch_size=8, shuffle=False, num_workers=2, multiprocessing_context="spawn"
    )
    seen = 0
    for batch in loader:
        assert batch["face"].shape[1:] == (16, 8) and batch["face"].dtype == torch.float32
        for b in range(len(batch["mask"])):
            clip_id = dataset.clip_ids[int(batch["clip_index"][b])]
            start = int(batch["start"][b])
            rows = clips[clip_id][start : start + 16]
            valid = batch["mask"][b].numpy()
            assert valid.sum() == len(rows)
            assert np.array_equal(batch["face"][b].numpy()[valid], rows)
            assert not batch["face"][b].numpy()[~valid].any()
            seen += 1
    assert seen == len(dataset)
    # Every row of every training clip is covered by some window.
    expected = sum(max(1, -(-len(clips[c]) // 16)) for c in dataset.clip_ids)
    assert len(dataset) == expected


def test_window_dataset_without_a_clip_table_uses_every_clip_of_the_stream(tmp_path):
    from features_store.torch_data import WindowDataset

    # `affect store import` writes a stream but no clip table.
    store = open_store(str(tmp_path / "x.zarr"))
    ramp_stream(store, "video", 0.04, {"a": (0.0, 40), "b": (0.0, 10)})
    dataset = WindowDataset(store.url, ["video"], window=16)
    assert dataset.clip_ids == ["a", "b"]
    assert [(dataset.clip_ids[c], s) for c, s in dataset.items] == [
        ("a", 0), ("a", 16), ("a", 32), ("b", 0)
    ]
    last = dataset[2]
    assert last["video"][:8, 0].tolist() == list(range(32, 40))
    assert last["mask"].tolist() == [True] * 8 + [False] * 8


def test_window_dataset_maps_a_faster_stream_onto_the_first_streams_timeline(tmp_path):
    from features_store.torch_data import WindowDataset

    store = open_store(str(tmp_path / "x.zarr"))
    ramp_stream(store, "video", 0.04, {"a": (0.0, 40), "b": (0.0, 10)})  # 25 fps
    ramp_stream(store, "audio", 0.02, {"a": (0.0, 80), "b": (0.0, 19)})  # 50 Hz
    dataset = WindowDataset(store.url, ["video", "audio"], window=16)
    batch = dataset.gather(range(len(dataset)))
    assert [item["audio"].shape for item in batch] == [(16, 2)] * len(dataset)
    # Video row j sits at j * 0.04 s, which is audio row 2 j (clamped to the clip's last row).
    second = batch[1]  # clip a, rows 16..31
    assert second["audio"][:, 0].tolist() == [2.0 * j for j in range(16, 32)]
    last_b = batch[-1]  # clip b: 10 video rows, 19 audio rows
    assert last_b["audio"][:10, 0].tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert last_b["mask"].tolist() == [True] * 10 + [False] * 6
    assert all(dataset[i]["audio"].equal(batch[i]["audio"]) for i in range(len(dataset)))


def test_read_aligned_answers_under_the_names_the_caller_used(tmp_path):
    store = open_store(str(tmp_path / "s.zarr"))
    store.create_stream(StreamInfo(name="swin-t", alias="swin-t@random@reduced", dim=2,
                                   frame_shift_s=0.04))
    with store.part_writer("swin-t@random@reduced", "p0") as writer:
        writer.write_clip("c", np.ones((5, 2), np.float32))
    store.finalize()
    key = store.resolve("swin-t").key
    feats, _ = store.read_aligned("c", ["swin-t", key], 0.04, method={"swin-t": "mean"})
    assert set(feats) == {"swin-t", key}
    assert feats["swin-t"].shape == (5, 2)
