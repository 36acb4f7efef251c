"""Every layout end to end: sample -> `affect extract --dataset` (ingest + the recipe's
encoders, random weights, reduced size) -> the store has the right clips per split, labels at
their rates, features for every clip, and `affect store verify` passes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from features_store import open_store, verify
from pipelines.cli import cli
from pipelines.datasets import get_adapter
from pipelines.samples import generate_sample

LAYOUTS = {
    # layout: (clips, seconds, a label stream and its rows per second or None for per-clip)
    "react": (10, 2.0, "react-emotion", 25.0),
    "raer": (5, 1.0, "raer-class", None),
    "affwild2": (3, 2.0, "affwild2-va", 30.0),
    "cremad": (6, 1.0, "cremad-va", None),
    "meld": (6, 1.0, "meld-emotion", None),
    "iemocap": (6, 1.0, "iemocap-emotion", None),
    "mosei": (6, 1.0, "mosei-labels", None),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_sample_extracts_with_the_recipe(layout, tmp_path):
    clips, seconds, label, rate = LAYOUTS[layout]
    root = tmp_path / layout
    generate_sample(layout, root, clips=clips, seconds=seconds, seed=1, size=32)
    store_path = str(tmp_path / f"{layout}.zarr")
    result = CliRunner().invoke(cli, [
        "extract", "--dataset", layout, "--data-root", str(root), "--store", store_path,
        "--weights", "random", "--reduced", "--device", "cpu", "--batch-size", "32",
    ])
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output

    store = open_store(store_path, "r")
    adapter = get_adapter(layout)
    scanned = adapter.scan(root)
    assert sorted(store.clip_ids()) == sorted(c["clip_id"] for c in scanned.clips)
    assert set(scanned.clips_per_split()) <= {"train", "val", "test"}
    for split, n in scanned.clips_per_split().items():
        assert len(store.clip_ids(split)) == n

    info = store.resolve(label)
    assert info.kind == "label"
    if rate is None:
        assert info.frame_shift_s is None
        assert {s.n_rows for s in store.shape_manifest(label)} == {1}
    else:
        assert info.frame_shift_s == pytest.approx(1 / rate)

    features = [s for s in store.streams("feature")]
    recipe = adapter.recipe.encoders
    assert len(features) == len(recipe)
    for stream in features:
        assert stream.extra["random_weights"]
        shapes = store.shape_manifest(stream)
        assert shapes, stream.alias
        assert all(s.n_rows > 0 for s in shapes), stream.alias
        if stream.frame_shift_s is not None and stream.extra["modality"] == "video":
            # Rows follow the recipe's frame rate over the clip's length.
            fps = adapter.recipe.fps or 25.0
            assert stream.frame_shift_s == pytest.approx(1 / fps)
    report = verify(store)
    assert report.ok, report.problems

    if layout == "react":
        out = tmp_path / "export"
        exported = CliRunner().invoke(cli, ["store", "export", store_path, "swin-t",
                                            "--format", "pth", "--out", str(out)])
        assert exported.exit_code == 0, exported.output
        files = sorted(p.relative_to(out).as_posix() for p in Path(out).rglob("*.pth"))
        assert len(files) == len(store.clip_ids())
        # The REACT baseline's Video_features/<site>/<group>/<pid>/<clip>.pth tree.
        assert all(len(f.split("/")) in (4, 5) for f in files)
        first = store.clip_ids()[0]
        tensor = torch.load(out / f"{first}.pth", weights_only=True)
        np.testing.assert_array_equal(tensor.numpy(), store.read_clip("swin-t", first))
