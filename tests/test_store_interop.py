"""Features in two lines, in the tools researchers already use: `import affect`, pandas,
xarray, Hugging Face `datasets` and a torch Dataset over the same store."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import affect
from features_store import StreamInfo
from features_store import open_store as open_for_writing
from features_store.errors import UserError
from pipelines.cli import cli

CLIPS = {"s1/a": ("train", "s1", 5), "s1/b": ("train", "s1", 3), "s2/a": ("val", "s2", 4)}


def rows_of(clip_id: str) -> np.ndarray:
    n = CLIPS[clip_id][2]
    seed = sorted(CLIPS).index(clip_id)
    return np.random.default_rng(seed).standard_normal((n, 6)).astype("float32")


@pytest.fixture
def store_url(tmp_path) -> str:
    store = open_for_writing(str(tmp_path / "feats.zarr"), dataset="toy")
    store.add_clips({"clip_id": c, "split": split, "speaker": who, "video": f"{c}.mp4"}
                    for c, (split, who, _) in CLIPS.items())
    video = store.create_stream(StreamInfo(name="video", alias="clip-vit-b16", dim=6,
                                           frame_shift_s=0.04, weights="random"))
    with store.part_writer(video, "p0") as writer:
        for clip_id in CLIPS:
            writer.write_clip(clip_id, rows_of(clip_id), t0=0.5)
    store.finalize()
    return store.url


def test_affect_open_store_is_read_only_and_a_typo_is_an_error_not_a_new_store(
        store_url, tmp_path):
    store = affect.open_store(store_url)
    assert store.mode == "r" and sorted(store.clip_ids()) == sorted(CLIPS)
    with pytest.raises(UserError, match="opened read-only"):
        store.add_clips([{"clip_id": "new"}])
    typo = tmp_path / "feets.zarr"
    with pytest.raises(UserError, match="not an affect feature store"):
        affect.open_store(str(typo))
    assert not typo.exists()
    assert affect.open_store(str(tmp_path / "new.zarr"), mode="a").mode == "a"  # asked for


def test_clips_frame_is_the_clip_table_as_a_dataframe(store_url):
    pandas = pytest.importorskip("pandas")
    frame = affect.open_store(store_url).clips_frame()
    assert isinstance(frame, pandas.DataFrame)
    assert frame.index.name == "clip_id" and sorted(frame.index) == sorted(CLIPS)
    assert list(frame.columns[:2]) == ["split", "speaker"]
    assert frame.loc["s2/a", "split"] == "val" and frame.loc["s1/b", "video"] == "s1/b.mp4"
    assert list(affect.open_store(store_url).clips_frame("val").index) == ["s2/a"]


def test_to_xarray_keeps_ragged_clips_apart_by_a_clip_coordinate(store_url):
    pytest.importorskip("xarray")
    ds = affect.open_store(store_url).to_xarray("clip-vit-b16")
    assert ds["features"].dims == ("row", "feature")
    assert ds.sizes["row"] == sum(n for *_, n in CLIPS.values()) and ds.sizes["feature"] == 6
    for clip_id in CLIPS:
        one = ds.where(ds.clip_id == clip_id, drop=True)
        np.testing.assert_array_equal(one["features"].values, rows_of(clip_id))
        n = CLIPS[clip_id][2]
        np.testing.assert_allclose(one["time_s"].values, 0.5 + 0.04 * np.arange(n))
        assert set(one["split"].values) == {CLIPS[clip_id][0]}
    assert ds.attrs["stream"] == "clip-vit-b16" and ds.attrs["frame_shift_s"] == 0.04


def test_store_export_hf_writes_a_datasets_dataset_one_record_per_clip(store_url, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "hf"
    result = CliRunner().invoke(cli, ["store", "export", store_url, "clip-vit-b16", "--format",
                                      "hf", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 3 clips" in result.output
    loaded = datasets.load_from_disk(str(out)).with_format("numpy")
    assert sorted(loaded["clip_id"]) == sorted(CLIPS)
    for record in loaded:
        clip_id = str(record["clip_id"])
        np.testing.assert_array_equal(record["features"], rows_of(clip_id))
        assert record["split"] == CLIPS[clip_id][0] and record["speaker"] == CLIPS[clip_id][1]
        assert record["t0"] == 0.5 and len(record["time_s"]) == CLIPS[clip_id][2]


def test_the_torch_dataset_is_affect_window_dataset(store_url):
    torch = pytest.importorskip("torch")
    dataset = affect.WindowDataset(store_url, ["clip-vit-b16"], window=2, split="train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    batch = next(iter(loader))
    assert batch["clip-vit-b16"].shape == (4, 2, 6)


def test_a_missing_optional_library_is_one_line_naming_the_extra():
    from features_store.interop import require

    with pytest.raises(UserError) as missing:
        require("affect_no_such_library", "affect-no-such-library")
    assert str(missing.value) == ("this needs the affect-no-such-library package: pip install "
                                  "affect-no-such-library (or pip install 'affect[interop]')")
