"""`affect predict --run RUN --media ...` for every head, not only the transformer family.

Story: for each head a researcher trains a small run on its dataset's generated sample (the
recipe's encoders, random reduced weights), then records one new clip. They point the run at
the new video (with a clips.jsonl when the run reads a transcript). affect re-extracts exactly
the run's streams from their provenance into a scratch store and writes one CSV per clip, the
head's own export and a plot. The long way must give the very same export: add the clip to the
training store as a split of its own with `affect extract --clips`, at the rate the dataset's
recipe uses, and `affect predict --split` it.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.datasets import get_adapter
from pipelines.samples import generate_sample
from pipelines.synthetic.av_writer import write_video


@dataclass
class Case:
    head: str
    dataset: str
    encoders: str  # what the run reads (the long way extracts exactly these)
    sample: dict
    sets: tuple[str, ...]
    text: str | None = None  # the new clip's transcript when the run reads a text stream


CASES = [
    Case("regnn", "react", "swin-t,vggish-react", {"clips": 8, "seconds": 4},
         ("iterations_per_epoch=2", "batch_size=4", "cross_layers=1", "self_layers=1",
          "n_samples=2")),
    Case("temporal_attention", "raer", "clip-vit-b16@rapt@face,clip-vit-b16@rapt@body",
         {"clips": 10, "seconds": 1}, ("batch_size=4",)),
    Case("tpn_awm", "iemocap", "wav2vec2-base,clip-vit-b16", {"clips": 12, "seconds": 1},
         ("shared_dim=16", "batch_size=4")),
    # trm's fixed profile: per-frame outputs on the video clock (the paper profile's released
    # mode predicts one row per clip)
    Case("trm", "cremad", "dasheng-base,hsemotion-enet-b0,embeddinggemma",
         {"clips": 12, "seconds": 0.8}, ("hidden=32", "heads=4", "batch_size=4",
                                        "profile=fixed"),
         text="Don't forget a jacket."),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def affect(*args: str, cwd: Path):
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output[-2000:]
    return result.output


def new_video(path: Path, seconds: float = 2.2) -> None:
    """A clip nobody ingested: moving texture at 30 fps (not the datasets' rate), a tone."""
    rng = np.random.default_rng(11)
    texture = rng.integers(0, 256, size=(72, 96, 3), dtype=np.uint8)
    n = int(seconds * 30)
    t = np.arange(int(seconds * 16000)) / 16000
    write_video(path, (np.roll(texture, 2 * k, axis=1)[:48, :64] for k in range(n)), fps=30,
                audio=(0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.head for c in CASES])
def test_new_media_predicts_as_if_ingested_extracted_and_predicted(case, tmp_path):
    root = tmp_path
    generate_sample(case.dataset, root / "data", seed=0, size=32, **case.sample)
    encoder_args = ["--encoders", case.encoders, "--weights", "random", "--reduced",
                    "--device", "cpu"]
    affect("extract", "--dataset", case.dataset, "--data-root", "data", "--store", "s.zarr",
           *encoder_args, cwd=root)
    affect("train", "--head", case.head, "--store", "s.zarr", "--out", "run", "--device", "cpu",
           "--quiet", "--epochs", "1", *(a for s in case.sets for a in ("--set", s)), cwd=root)
    new_video(root / "new" / "visitor.mp4")
    clip = {"clip_id": "visitor", "video": "new/visitor.mp4"}
    if case.text:
        clip["text"] = case.text
    (root / "visitor.jsonl").write_text(json.dumps(clip) + "\n")
    media = "visitor.jsonl" if case.text else "new/visitor.mp4"

    if case.text:  # a bare video has no transcript for the text stream: one line, nothing kept
        bare = subprocess.run([sys.executable, "-m", "pipelines", "predict", "--run", "run",
                               "--media", "new/visitor.mp4", "--out", "bare", "--device", "cpu"],
                              cwd=root, capture_output=True, text=True)
        assert bare.returncode == 2
        lines = bare.stderr.strip().splitlines()
        assert len(lines) == 1 and "visitor.mp4" in lines[0] and '"text"' in lines[0], lines
        assert not (root / "bare" / "store.zarr").exists()

    out = affect("predict", "--run", "run", "--media", media, "--out", "pred", "--device",
                 "cpu", cwd=root)
    assert f"predicted 1 clip(s) with {case.head}" in out
    summary = json.loads((root / "pred" / "predictions.json").read_text())
    assert summary["clips"] == 1 and summary["head"] == case.head
    assert (root / "pred" / "predictions.png").stat().st_size > 1000
    rows = read_csv(root / "pred" / "clips" / "visitor.csv")
    check_table(case, rows)

    # The long way: the clip in the training store as a split of its own, extracted at the
    # dataset recipe's rate, then predicted through the store.
    (root / "long.jsonl").write_text(json.dumps({**clip, "split": "new"}) + "\n")
    fps = get_adapter(case.dataset).recipe.fps or 25.0
    affect("extract", "--clips", "long.jsonl", "--store", "s.zarr", *encoder_args, "--fps",
           str(fps), cwd=root)
    affect("predict", "--run", "run", "--split", "new", "--export", "through-store",
           "--device", "cpu", cwd=root)
    direct = tree(root / "pred" / "export")
    through_store = tree(root / "through-store")
    renamed = {k.replace("predict", "new", 1): v for k, v in direct.items()}
    assert direct and set(renamed) == set(through_store)
    for name, content in through_store.items():
        if name.endswith(".csv"):  # the split's name is in nothing but the file name
            assert renamed[name] == content, name
        else:  # REGNN's result-<i>.pth tensors
            assert torch.equal(torch.load(root / "through-store" / name, weights_only=True),
                               torch.load(root / "pred" / "export" / name.replace(
                                   "new", "predict", 1), weights_only=True)), name


def check_table(case: Case, rows: list[list[str]]) -> None:
    header, body = rows[0], rows[1:]
    if case.head in ("temporal_attention", "tpn_awm"):  # one row of class probabilities
        assert header[0] == "predicted" and len(body) == 1
        probabilities = np.array(body[0][1:], float)
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
        assert body[0][0] == header[1 + int(probabilities.argmax())]
    elif case.head == "regnn":  # two generated reactions of 25 channels at 25 fps
        assert header[:2] == ["time_s", "sample"] and len(header) == 2 + 25
        assert "valence" in header and "AU1" in header
        samples = [int(r[1]) for r in body]
        assert sorted(set(samples)) == [0, 1] and samples.count(0) == samples.count(1)
        assert float(body[1][0]) == pytest.approx(0.04)
    else:  # trm: valence and arousal per frame of the 25 fps video clock
        assert header == ["time_s", "valence", "arousal"]
        assert len(body) >= 50 and float(body[1][0]) == pytest.approx(0.04)


@pytest.mark.parametrize("name,arguments", [("vggish-react", {}), ("clip-vit-b16", {}),
                                            ("vggish-react", {"embedding": "raw"})])
def test_a_stream_recorded_before_its_arguments_is_still_rebuilt(tmp_path, name, arguments):
    """Stores written before streams recorded their encoder's arguments: the recorded options
    are resolved values (VGGish's PCA as `random:0`, CLIP's activation from its tag), which
    are no arguments; the rebuild finds the arguments that give the recorded key."""
    from extract.report import ExtractOptions
    from extract.runner import build_plans
    from features_store import open_store
    from pipelines.predict_media import check_same_streams, stream_requests

    options = ExtractOptions(encoders=[name], weights="random", reduced=True,
                             encoder_options={name: arguments})
    info = build_plans(options, "cpu")[0].info.with_key()
    info.extra.pop("arguments")
    store = open_store(str(tmp_path / "old.zarr"))
    store.create_stream(info)
    requests = stream_requests(store, [info.key], {}, "cpu")
    check_same_streams(requests, "cpu")  # raises unless some guess gives the very key
    assert arguments.items() <= requests[0].options.encoder_options[name].items()
