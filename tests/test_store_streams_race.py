"""Two processes on one store at the moment a stream is created: the stream list a handle took
earlier must not make it refuse a stream another process has just created (issue 17, item 1).
"""

from __future__ import annotations

import multiprocessing

from features_store import StreamInfo, open_store, verify

AUDIO = StreamInfo(name="audio-enc", dim=8, dtype="float32")
VIDEO = StreamInfo(name="video-enc", dim=8, dtype="float32")
CLIPS = [f"clip{i}" for i in range(4)]


def _create_between_barriers(url: str, barrier) -> None:
    """The other process: creates the stream while the first one holds an older listing."""
    store = open_store(url)
    barrier.wait()  # the first process has listed the streams
    store.create_stream(VIDEO)
    barrier.wait()  # the stream exists: the first process creates it now


def test_a_stream_created_by_another_process_after_our_listing_resolves(tmp_path):
    url = str(tmp_path / "x.zarr")
    store = open_store(url)
    store.add_clips([{"clip_id": c} for c in CLIPS])
    store.create_stream(AUDIO)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2, timeout=120)
    other = context.Process(target=_create_between_barriers, args=(url, barrier))
    other.start()
    try:
        # As a resume check or the dask planner does before creating its streams.
        assert [s.name for s in store.streams()] == ["audio-enc"]
        barrier.wait()
        barrier.wait()
        # What extraction does next (extract.runner.prepare_store): create, record the intent.
        video = store.create_stream(VIDEO)
        store.record_intent(video, CLIPS)
    finally:
        other.join(timeout=120)
    assert other.exitcode == 0
    assert store.resolve("video-enc").key == video.key
    assert store.committed_clip_ids(video.key) == set()
    # The intent is there, so verify tells this run's gap from a finished stream.
    report = verify(open_store(url, mode="r"))
    assert report.missing == {"video-enc": CLIPS}


def test_a_miss_relists_once_and_a_hit_is_answered_from_the_listing(tmp_path):
    url = str(tmp_path / "x.zarr")
    store = open_store(url)
    store.create_stream(AUDIO)
    assert len(store.streams()) == 1
    video = open_store(url).create_stream(VIDEO)  # another handle: our listing is older
    assert store.resolve(video.key).key == video.key
    assert {s.name for s in store.streams()} == {"audio-enc", "video-enc"}
