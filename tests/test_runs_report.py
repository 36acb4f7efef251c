"""The experiment table, per-run HTML reports, seed sweeps and the TensorBoard mirror.

Story: a researcher trains TRM with three seeds over one cached store (`--seeds`) and gets the
mean ± std of each metric beside the runs; trains a classifier on another store; `affect runs ls`
lists every run with its head, dataset, store, stream keys, seed, epochs, best and test metric;
`affect report RUN` writes one self-contained HTML page per run (config, provenance, curves and
the plot that fits the head: a valence-arousal scatter for TRM, a confusion matrix for the
classifier), which a real headless browser renders with every image decoded; the trainer's
scalars also land in RUN/tb for TensorBoard.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from features_store import StreamInfo, open_store
from heads.base import Head, HeadConfig, Recipe
from heads.metrics import war
from heads.registry import register_head
from heads.trainer import train
from pipelines.cli import cli
from pipelines.synthetic.feature_stores import cremad_like_store

CLASSES = ["calm", "happy", "angry"]
TRM_SMALL = ["--set", "hidden=32", "--set", "heads=4", "--set", "batch_size=8",
             "--set", "lr=1e-2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_class_store(path: Path, seed: int = 0) -> str:
    """Per-clip 4-d features whose direction gives one of three classes."""
    rng = np.random.default_rng(seed)
    store = open_store(str(path), mode="a", dataset="toyclasses")
    x = store.create_stream(StreamInfo(name="toy-x", dim=4))
    y = store.create_stream(StreamInfo(name="toy-class", kind="label", dim=1, dtype="int64",
                                       extra={"classes": CLASSES}))
    centres = rng.normal(size=(3, 4)) * 3
    clips = []
    with store.part_writer(x, "p0") as xw, store.part_writer(y, "p0") as yw:
        for k in range(90):
            label = k % 3
            clip_id = f"clip{k:03d}"
            xw.write_clip(clip_id, (centres[label] + rng.normal(size=4))[None, :])
            yw.write_clip(clip_id, np.array([[label]]))
            clips.append({"clip_id": clip_id,
                          "split": ["train", "train", "train", "val", "test"][k % 5]})
    store.add_clips(clips)
    store.finalize()
    return str(path)


@dataclass
class ToyConfig(HeadConfig):
    epochs: int = 4
    lr: float = 0.05


@register_head
class ToyClassifier(Head):
    """A linear classifier on per-clip features; predictions are class scores per clip."""

    name = "toy-classifier-test-head"
    config_cls = ToyConfig
    default_dataset = "toyclasses"
    metric_name = "accuracy"

    def recipe(self) -> Recipe:
        return Recipe(features=["toy-x"], labels=["toy-class"])

    def build_data(self, store):
        data = {}
        for split in ("train", "val", "test"):
            ids = store.clip_ids(split)
            x = np.stack([store.read_clip("toy-x", c)[0] for c in ids]).astype(np.float32)
            y = np.array([int(store.read_clip("toy-class", c)[0, 0]) for c in ids])
            data[split] = (ids, x, y)
        return data

    def build_model(self, data) -> nn.Module:
        return nn.Linear(4, 3)

    def train_batches(self, data, epoch, rng):
        _, x, y = data["train"]
        order = rng.permutation(len(x))
        for start in range(0, len(order), 16):
            rows = order[start : start + 16]
            yield torch.from_numpy(x[rows]), torch.from_numpy(y[rows])

    def training_step(self, model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    def predict(self, model, data, split):
        ids, x, _ = data[split]
        return dict(zip(ids, torch.softmax(model(torch.from_numpy(x)), -1).numpy()))

    def score(self, predictions, data, split):
        ids, _, y = data[split]
        return {"accuracy": war(y, np.array([int(np.argmax(predictions[c])) for c in ids]))}

    def export(self, predictions, data, split, out_dir):
        return []


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("runs-report")
    trm_store = cremad_like_store(base / "cremad.zarr", 40, frames=6, actors=20,
                                  dims={"dasheng-base": 8, "hsemotion-enet-b0": 12,
                                        "embeddinggemma": 4})
    runs = base / "runs"
    result = CliRunner().invoke(cli, ["train", "--head", "trm", "--store", trm_store, "--out",
                                      str(runs / "trm"), "--epochs", "2", "--quiet",
                                      "--seeds", "0,1,2", *TRM_SMALL])
    assert result.exit_code == 0, result.output
    assert "seeds-summary.json" in result.output
    evaluated = CliRunner().invoke(cli, ["evaluate", "--run", str(runs / "trm" / "seed-0"),
                                         "--split", "test", "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    class_store = build_class_store(base / "classes.zarr")
    head = ToyClassifier()
    train(head, class_store, runs / "toy", device="cpu", progress=False)
    return runs


def test_seeds_share_the_store_and_are_summarised_as_mean_and_std(runs_dir):
    summary = json.loads((runs_dir / "trm" / "seeds-summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    configs = [json.loads((runs_dir / "trm" / f"seed-{s}" / "config.json").read_text())
               for s in (0, 1, 2)]
    assert len({json.dumps(c["streams"], sort_keys=True) for c in configs}) == 1  # same tensors
    assert [c["config"]["seed"] for c in configs] == [0, 1, 2]
    stats = summary["splits"]["val"]["ccc_mean"]
    values = [json.loads((runs_dir / "trm" / f"seed-{s}" / "eval-val.json").read_text())
              ["metrics"]["ccc_mean"] for s in (0, 1, 2)]
    assert stats["values"] == values
    assert stats["mean"] == pytest.approx(np.mean(values))
    assert stats["std"] == pytest.approx(np.std(values))
    assert len(set(values)) > 1  # the seeds really differ


def test_runs_ls_lists_one_row_per_run(runs_dir):
    table = CliRunner().invoke(cli, ["runs", "ls", str(runs_dir)])
    assert table.exit_code == 0, table.output
    lines = table.output.strip().splitlines()
    assert lines[0].split()[:3] == ["run", "head", "dataset"]
    assert len(lines) == 1 + 4  # three seeds and the classifier
    as_json = CliRunner().invoke(cli, ["runs", "ls", str(runs_dir), "--json"])
    rows = {Path(r["run"]).name: r for r in json.loads(as_json.output)}
    seed0 = rows["seed-0"]
    assert (seed0["head"], seed0["dataset"], seed0["seed"]) == ("trm", "cremad", 0)
    assert (seed0["epochs_done"], seed0["epochs"], seed0["metric"]) == (2, 2, "ccc_mean")
    assert set(seed0["streams"]) == {"dasheng-base", "hsemotion-enet-b0", "embeddinggemma",
                                     "cremad-va"}
    saved = json.loads((runs_dir / "trm" / "seed-0" / "eval-test.json").read_text())
    assert seed0["test_value"] == pytest.approx(saved["metrics"]["ccc_mean"])
    assert rows["seed-1"]["test_value"] is None  # not evaluated on test
    toy = rows["toy"]
    assert (toy["head"], toy["dataset"], toy["metric"]) == (
        "toy-classifier-test-head", "toyclasses", "accuracy")
    assert toy["best_value"] is not None and toy["best_value"] > 0.6
    missing = CliRunner().invoke(cli, ["runs", "ls", str(runs_dir / "nope")])
    assert missing.exit_code != 0


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        self._in_heading = tag in ("h1", "h2")

    def handle_data(self, data):
        if self._in_heading:
            self.headings.append(data)

    def handle_endtag(self, tag):
        self._in_heading = False


def check_page(path: Path) -> PageParser:
    """The page parses, refers to nothing outside itself, and every image is a real PNG."""
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    parser = PageParser()
    parser.feed(text)
    parser.close()
    assert "http://" not in text and "https://" not in text
    for image in parser.images:
        assert image["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(image["src"].split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    return parser


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, tmp_path: Path) -> str:
    """The DOM after a headless chromium loaded the page, with each image's decoded width
    written into <body data-widths> by a probe script added to a copy of the page."""
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>window.onload=()=>{document.body.dataset.widths="
        "[...document.images].map(i=>i.naturalWidth).join(',')}</script></body>"))
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_report_pages_are_self_contained_and_show_the_plot_of_each_head(runs_dir, tmp_path):
    trm_page = tmp_path / "trm.html"
    result = CliRunner().invoke(cli, ["report", str(runs_dir / "trm" / "seed-0"), "--out",
                                      str(trm_page)])
    assert result.exit_code == 0, result.output
    parsed = check_page(trm_page)
    headings = " | ".join(parsed.headings)
    for section in ("Curves", "Stream provenance", "Valence-arousal", "Config"):
        assert section in headings, headings
    assert len(parsed.images) == 2  # curves and the scatter
    text = trm_page.read_text()
    for key in json.loads((runs_dir / "trm" / "seed-0" / "config.json").read_text())[
            "streams"].values():
        assert key in text  # provenance names each stream key

    toy_page = runs_dir / "toy" / "report.html"
    result = CliRunner().invoke(cli, ["report", str(runs_dir / "toy")])
    assert result.exit_code == 0, result.output
    parsed = check_page(toy_page)
    assert any("Confusion matrix" in h for h in parsed.headings), parsed.headings
    assert "test items" in toy_page.read_text() or "test clips" in toy_page.read_text()

    if chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); parse checks ran")
    for page in (trm_page, toy_page):
        dom = render(page, tmp_path)
        assert "<h2>Curves</h2>" in dom
        widths = dom.split('data-widths="', 1)[1].split('"', 1)[0].split(",")
        assert len(widths) == 2 and all(int(w) > 100 for w in widths), widths


def test_trainer_scalars_are_mirrored_to_tensorboard(runs_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs_dir / "trm" / "seed-0" / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"epoch/train_loss", "epoch/data_wait_share", "val/ccc_mean", "lr/group0"} <= tags
    logged = [e.value for e in events.Scalars("val/ccc_mean")]
    records = [json.loads(line) for line in
               (runs_dir / "trm" / "seed-0" / "metrics.jsonl").read_text().splitlines()]
    expected = [r["metrics"]["ccc_mean"] for r in records if r["kind"] == "eval"]
    assert logged == pytest.approx(expected)


@pytest.mark.slow
def test_regnn_report_shows_reaction_channels_against_the_listener(tmp_path):
    from test_regnn import tiny_config, toy_react_store

    from heads.registry import get_head

    store = toy_react_store(str(tmp_path / "react.zarr"), {"train": 3, "val": 2})
    head = get_head("regnn")(tiny_config(out_dim=25, top_k=5, epochs=1, batch_size=8,
                                         iterations_per_epoch=2, n_samples=3))
    train(head, store, tmp_path / "regnn", device="cpu", progress=False)
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "regnn")])
    assert result.exit_code == 0, result.output
    parsed = check_page(tmp_path / "regnn" / "report.html")
    assert any("Reactions over time (val" in h for h in parsed.headings), parsed.headings
    assert len(parsed.images) == 2


@pytest.mark.slow
def test_demo_runs_any_head_on_its_own_sample(tmp_path):
    from pipelines.cli.demo import HEAD_DEMO_SETTINGS

    assert "trm" in HEAD_DEMO_SETTINGS
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "demo", "--head", "trm", "--out", str(tmp_path),
         "--epochs", "2", "--device", "cpu"], capture_output=True, text=True, timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "affect report" in result.stdout
    check_page(tmp_path / "runs" / "trm" / "report.html")
    assert json.loads((tmp_path / "runs" / "trm" / "eval-test.json").read_text())["metrics"]
