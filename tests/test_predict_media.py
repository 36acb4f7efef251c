"""`affect predict --run RUN --media VIDEO`: a trained head on a video nobody ingested.

Story: a researcher trained `transformer-lstm` on Aff-Wild2 features and now has a new video.
Without writing a clips file or knowing which encoder settings the run used, they point the run
at the video; affect re-extracts exactly the run's streams from their recorded provenance and
predicts valence/arousal over time. The result must be what the long way gives (ingest the
video into the training store, extract, `affect predict --split`), and an encoder that would give
different features (other weights) must be refused, not silently used.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.samples import generate_sample
from pipelines.synthetic.av_writer import write_video

ENCODER = ["--encoders", "hsemotion-enet-b0", "--weights", "random", "--reduced"]


def affect(*args: str, cwd: Path, ok: bool = True):
    """Run `affect ARGS` in `cwd`: in-process (fast), or as a real process when the exit code
    and stderr are under test."""
    if ok:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(cwd)
            result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output[-2000:]
        return result
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    generate_sample("affwild2", root / "aw", clips=4, seconds=1.0, seed=3, size=32)
    affect("extract", "--dataset", "affwild2", "--data-root", "aw", "--store", "s.zarr",
           *ENCODER, "--device", "cpu", cwd=root)
    # key_padding_mask=true: in the paper profile the encoder attends to the padding past a
    # shorter video's end, so a clip's prediction depends on the clips batched with it (as in
    # the released test.py); masked, it is the same alone (--media) and in the store's split
    affect("train", "--head", "transformer-lstm", "--store", "s.zarr", "--out", "run",
           "--device", "cpu", "--quiet", "--set", "epochs=1", "--set",
           "features=hsemotion-enet-b0", "--set", "d_model=32", "--set", "chunk=16",
           "--set", "key_padding_mask=true", cwd=root)
    rng = np.random.default_rng(5)
    texture = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    write_video(root / "new" / "visitor.mp4",
                (np.roll(texture, k, axis=1)[:32, :40] for k in range(27)), fps=30)
    return root


def test_new_video_predicts_as_if_ingested_and_extracted(trained):
    root = trained
    out = affect("predict", "--run", "run", "--media", "new/visitor.mp4", "--out", "pred",
                 "--device", "cpu", cwd=root)
    assert "predicted 1 clip(s)" in out.output
    assert "extract:" not in out.output  # no `extract: 1/1 clips, 0 frames` log lines
    summary = json.loads((root / "pred" / "predictions.json").read_text())
    assert summary["head"] == "transformer-lstm" and summary["clips"] == 1
    assert (root / "pred" / "predictions.png").stat().st_size > 1000
    rows = (root / "pred" / "clips" / "visitor.csv").read_text().splitlines()
    assert rows[0] == "time_s,valence,arousal"
    assert len(rows) - 1 == 27  # one row per frame of the 30 fps label timeline

    # The long way: add the video to the training store as a test clip and extract it with the
    # settings the dataset's recipe used (Aff-Wild2 decodes at 30 fps), then predict the split.
    clips = root / "visitor.jsonl"
    clips.write_text(json.dumps({"clip_id": "visitor", "video": "new/visitor.mp4",
                                 "split": "test"}) + "\n")
    affect("extract", "--clips", str(clips), "--store", "s.zarr", *ENCODER, "--fps", "30",
           "--device", "cpu", cwd=root)
    affect("predict", "--run", "run", "--split", "test", "--export", "through-store",
           "--device", "cpu", cwd=root)
    direct = (root / "pred" / "export" / "visitor.txt").read_text()
    through_store = (root / "through-store" / "visitor.txt").read_text()
    assert direct == through_store
    assert len(direct.splitlines()) > 20


def test_other_weights_are_refused_in_one_line(trained):
    result = affect("predict", "--run", "run", "--media", "new/visitor.mp4", "--out", "other",
                    "--device", "cpu", "--weights", "hsemotion-enet-b0=random:7", cwd=trained,
                    ok=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stream hsemotion-enet-b0")
    assert "--weights hsemotion-enet-b0=PATH" in lines[0]
    assert not (trained / "other" / "store.zarr").exists()  # refused before extracting
