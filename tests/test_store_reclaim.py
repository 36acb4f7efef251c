"""Two commits of the same clips a few ms apart both land (each checked before the other's
manifest existed): readers use the first, and finalize (as every finished run calls it)
reclaims the second copy within the commit protocol's rules (issue 17, item 2).
"""

from __future__ import annotations

import os

import numpy as np

from features_store import StreamInfo, open_store, verify
from features_store import commit as protocol

DIM = 16


def racing_commit(store, info, part_id: str, clips: dict[str, float]) -> None:
    """Commit a part as a writer does that checked for committed clips before another run's
    manifest appeared (the window of a real race, opened on purpose)."""
    writer = store.part_writer(info, part_id)
    for clip_id, value in clips.items():
        writer.write_clip(clip_id, np.full((40, DIM), value, "float32"))
    writer.store.committed_clip_ids = lambda _key: set()
    try:
        writer.commit()
    finally:
        del writer.store.committed_clip_ids


def stored_rows(store, info) -> int:
    return sum(store.backend.part_reader(info.key, p).shape[0]
               for p in store.backend.list_parts(info.key))


def test_finalize_reclaims_a_part_whose_every_clip_was_committed_first_elsewhere(tmp_path):
    url = str(tmp_path / "x.zarr")
    store = open_store(url)
    info = store.create_stream(StreamInfo(name="enc", dim=DIM, dtype="float32"))
    racing_commit(open_store(url), info, "first", {"a": 1.0, "b": 2.0})
    racing_commit(open_store(url), info, "second", {"a": 1.0, "b": 2.0})
    racing_commit(open_store(url), info, "third", {"b": 2.0, "c": 3.0})  # wins c only
    assert stored_rows(store, info) == 6 * 40
    assert any("committed by parts" in n for n in verify(store).notes)
    pruned = store.finalize()
    assert list(pruned[info.key]) == ["second"]
    assert sorted(store.committed_parts(info)) == ["first", "third"]
    assert sorted(store.backend.list_parts(info.key)) == ["first", "third"]
    assert not os.path.exists(os.path.join(url, "streams", info.key, "leases", "part-second.json"))
    reader = open_store(url, mode="r")
    assert reader.load_stream(info).clip_ids == ["a", "b", "c"]
    for clip_id, value in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        assert np.array_equal(reader.read_clip(info, clip_id), np.full((40, DIM), value))
    assert stored_rows(store, info) == 4 * 40  # "third" keeps its copy of b: never rewritten
    assert verify(reader).ok


def test_a_part_under_someone_elses_lease_is_left_for_later(tmp_path):
    url = str(tmp_path / "x.h5")
    store = open_store(url)
    info = store.create_stream(StreamInfo(name="enc", dim=DIM, dtype="float32"))
    racing_commit(open_store(url), info, "first", {"a": 1.0})
    racing_commit(open_store(url), info, "second", {"a": 1.0})
    held = protocol._try_create(open_store(url), info.key, "second")
    assert held is not None
    assert store.finalize() == {}
    assert sorted(store.committed_parts(info)) == ["first", "second"]
    protocol._drop_lease_file(store, info.key, "second")
    assert list(store.finalize()[info.key]) == ["second"]
