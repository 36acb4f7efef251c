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
import re
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
    # recorded as extracted with random weights, as a smoke run's streams are
    x = store.create_stream(StreamInfo(name="toy-x", dim=4, weights="random",
                                       extra={"random_weights": True}))
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
    amp: str = "bf16"  # asked for; on a CPU the trainer runs without it


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

    def ensemble(self, predictions):
        return {c: np.mean([p[c] for p in predictions], axis=0) for c in predictions[0]}


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
    train(ToyClassifier(ToyConfig(seed=1)), class_store, runs / "toy-b", device="cpu",
          progress=False)
    ensembled = CliRunner().invoke(cli, ["ensemble", "--runs", f"{runs / 'toy'},{runs / 'toy-b'}",
                                         "--split", "test", "--export",
                                         str(runs / "toy-ensemble"), "--device", "cpu"])
    assert ensembled.exit_code == 0, ensembled.output
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
    assert lines[0].split()[:4] == ["run", "head", "profile", "dataset"]
    # two seed groups, each under its summary row (three TRM seeds, two classifier seeds), and
    # the ensemble of the two classifiers
    assert len(lines) == 1 + (1 + 3) + (1 + 2) + 1
    as_json = CliRunner().invoke(cli, ["runs", "ls", str(runs_dir), "--json"])
    rows = {Path(r["run"]).name: r for r in json.loads(as_json.stdout)}
    assert len(rows) == 6
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


def table_cells(text: str) -> dict[str, str]:
    """Every <tr><th>name</th><td>value</td></tr> of a page, as name -> value text."""
    import html as html_lib

    found = re.findall(r"<tr><th>([^<]*)</th><td>(.*?)</td></tr>", text)
    return {html_lib.unescape(k): html_lib.unescape(re.sub(r"<[^>]+>", "", v)) for k, v in found}


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
    written into <body data-widths>, and the number of lines each stream key took into
    <body data-keylines>, by a probe script added to a copy of the page."""
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>window.onload=()=>{document.body.dataset.widths="
        "[...document.images].map(i=>i.naturalWidth).join(',');"
        "document.body.dataset.keylines=[...document.querySelectorAll('code.key')]"
        ".map(k=>k.getClientRects().length).join(',')}</script></body>"))
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
    saved = json.loads((runs_dir / "trm" / "seed-0" / "config.json").read_text())
    for key in saved["streams"].values():
        assert f"<code class=key>{key}</code>" in text  # provenance names each stream key
    # the title and the heading name the metric of the number they show
    title = text.split("<title>", 1)[1].split("</title>", 1)[0]
    assert re.search(r"test ccc_mean -?\d\.\d+ \(best val ccc_mean -?\d\.\d+ at epoch \d\)",
                     title), title
    assert "test ccc_mean" in parsed.headings[0]
    cells = table_cells(text)
    for row in ("command", "affect version", "git commit", "host", "device", "wall time",
                "profile", "deviations from the paper", "approximate", "seed"):
        assert cells.get(row, "-") not in ("", None) and row in cells, row
    assert cells["command"] != "-" and cells["device"] == "cpu"
    assert re.fullmatch(r"ccc_mean -?\d\.\d+", cells["test"]), cells["test"]
    assert re.fullmatch(r"val ccc_mean -?\d\.\d+ \(epoch \d\)", cells["best"]), cells["best"]
    assert re.fullmatch(r"\d+s|\d+m\d\ds", cells["wall time"]), cells["wall time"]
    assert '{"' not in text  # provenance as rows, not raw JSON blobs
    assert "RANDOM WEIGHTS" not in text

    toy_page = runs_dir / "toy" / "report.html"
    result = CliRunner().invoke(cli, ["report", str(runs_dir / "toy")])
    assert result.exit_code == 0, result.output
    parsed = check_page(toy_page)
    assert any("Confusion matrix" in h for h in parsed.headings), parsed.headings
    toy_text = toy_page.read_text()
    assert "test items" in toy_text or "test clips" in toy_text
    # a stream from random weights: a banner above everything else on the page
    assert toy_text.index("<div class=banner>RANDOM WEIGHTS: stream toy-x") < toy_text.index(
        "<h1>")
    # the config as it ran: AMP is off on a CPU whatever the config asked (the config table
    # comes last, so its row is the one kept here)
    assert table_cells(toy_text)["amp"] == "off (requested bf16)"

    if chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); parse checks ran")
    for page in (trm_page, toy_page):
        dom = render(page, tmp_path)
        assert "<h2>Curves</h2>" in dom
        widths = dom.split('data-widths="', 1)[1].split('"', 1)[0].split(",")
        assert len(widths) == 2 and all(int(w) > 100 for w in widths), widths
        keylines = dom.split('data-keylines="', 1)[1].split('"', 1)[0].split(",")
        assert keylines and all(n == "1" for n in keylines), keylines  # one line per key


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


def test_the_demo_continues_a_run_an_interrupted_demo_left(tmp_path):
    """An earlier demo stopped during training leaves RUN/checkpoints/last.pt: the rerun's train
    step resumes that run (it used to be refused: `use --resume or a new --out`)."""
    from heads.base import apply_overrides
    from heads.registry import get_head
    from pipelines.cli.demo import _continue_run

    store = cremad_like_store(tmp_path / "cremad.zarr", 20, frames=6, actors=10,
                              dims={"dasheng-base": 8, "hsemotion-enet-b0": 12,
                                    "embeddinggemma": 4})
    run = tmp_path / "runs" / "trm"
    said: list[str] = []
    assert _continue_run(str(run), said.append) == []  # a first demo starts the run
    args = ["train", "--head", "trm", "--store", store, "--out", str(run), "--epochs", "2",
            "--quiet", *TRM_SMALL]
    head_cls = get_head("trm")
    head = head_cls(apply_overrides(head_cls.config_cls(), [
        "hidden=32", "heads=4", "batch_size=8", "lr=1e-2", "epochs=2"]))
    train(head, store, run, device="cpu", progress=False, stop_after=1)  # interrupted
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code != 0 and "use --resume" in str(refused.exception)
    extra = _continue_run(str(run), said.append)
    assert extra == ["--resume"] and str(run) in said[-1]
    rerun = CliRunner().invoke(cli, [*args, *extra])
    assert rerun.exit_code == 0, rerun.output
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text()
              .splitlines() if json.loads(line)["kind"] == "epoch"]
    assert epochs == [1, 2]
    # A finished run resumed again does nothing more and still ends well (a third demo).
    again = CliRunner().invoke(cli, [*args, *_continue_run(str(run), said.append)])
    assert again.exit_code == 0, again.output


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_rerunning_an_interrupted_demo_resumes_and_ends_well(tmp_path):
    import signal
    import time

    command = [sys.executable, "-m", "pipelines", "demo", "--head", "trm", "--out",
               str(tmp_path), "--epochs", "3", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last = tmp_path / "runs" / "trm" / "checkpoints" / "last.pt"
    # Its own process group, as a terminal's foreground job: Ctrl-C reaches every step (and
    # SIGINT is handled there even when these tests run as a background job, which ignores it).
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 1200
    while time.time() < deadline and first.poll() is None and not last.exists():
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()[0][-3000:]
    os.killpg(first.pid, signal.SIGINT)
    first.communicate(timeout=120)
    assert first.returncode != 0
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "its training resumes from the last finished epoch" in second.stdout
    check_page(tmp_path / "runs" / "trm" / "report.html")


# --- the run table: aliases, seed groups, sorting, filters, ensembles, diffs -------------------


def cell(table: str, line: str, column: str) -> str:
    """The text of a (left-aligned) column in one line of a table printed with its header."""
    header = table.splitlines()[0]
    start = header.index(f"  {column} ") + 2
    return line[start:].split("  ")[0].strip()


def test_run_table_groups_seeds_and_sorts_filters_and_lists_ensembles(runs_dir):
    from pipelines.runs import read_run

    out = CliRunner().invoke(cli, ["runs", "ls", str(runs_dir)]).output
    config = json.loads((runs_dir / "trm" / "seed-0" / "config.json").read_text())
    for key in config["streams"].values():  # streams by alias, not by hash fragment
        assert key.rsplit("-", 1)[-1][:8] not in out
    assert ",".join(config["streams"]) in out
    summary = next(line for line in out.splitlines() if "(seeds 0,1,2)" in line)
    bests = [read_run(runs_dir / "trm" / f"seed-{s}").best_value for s in (0, 1, 2)]
    assert f"{np.mean(bests):.4f} ± {np.std(bests):.4f} (n=3)" in summary
    assert "3 seeds" in summary
    seed_lines = [line for line in out.splitlines() if "/trm/seed-" in line]
    assert [cell(out, line, "seed") for line in seed_lines] == ["0", "1", "2"]
    ensemble = next(line for line in out.splitlines() if "toy-ensemble" in line)
    assert "(ensemble of 2 runs)" in ensemble

    trm_only = CliRunner().invoke(cli, ["runs", "ls", str(runs_dir), "--filter", "head=trm",
                                        "--sort", "best"]).output.strip().splitlines()[1:]
    assert len(trm_only) == 4 and "(seeds 0,1,2)" in trm_only[0]
    order = [int(line.split("/trm/seed-")[1].split()[0]) for line in trm_only[1:]]
    assert order == sorted((0, 1, 2), key=lambda s: -bests[s])  # ccc_mean: higher first

    rows = json.loads(CliRunner().invoke(cli, ["runs", "ls", str(runs_dir), "--filter",
                                               "kind=ensemble", "--json"]).output)
    saved = json.loads((runs_dir / "toy-ensemble" / "ensemble.json").read_text())
    assert len(rows) == 1 and rows[0]["head"] == "toy-classifier-test-head"
    assert rows[0]["test_value"] == pytest.approx(saved["metrics"]["accuracy"])

    wrong = CliRunner().invoke(cli, ["runs", "ls", str(runs_dir), "--filter", "colour=red"])
    assert wrong.exit_code != 0 and "no run has a field 'colour'" in str(wrong.exception)


def test_runs_diff_shows_only_what_differs(runs_dir):
    seed0, seed1 = runs_dir / "trm" / "seed-0", runs_dir / "trm" / "seed-1"
    result = CliRunner().invoke(cli, ["runs", "diff", str(seed0), str(seed1), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    fields = {(r["section"], r["field"]) for r in rows}
    assert ("config", "seed") in fields
    assert not any(section == "streams" for section, _ in fields)  # the same tensors
    assert {f for section, f in fields if section == "run"} <= {"deviations"}  # seed=1
    assert ("config", "lr") not in fields  # equal in both: left out
    assert ("metrics", "val best: ccc_mean") in fields
    assert ("metrics", "test eval: ccc_mean") in fields  # only seed-0 was evaluated on test
    seed_row = next(r for r in rows if r["field"] == "seed")
    assert (seed_row["a"], seed_row["b"]) == (0, 1)

    readable = CliRunner().invoke(cli, ["runs", "diff", str(seed0), str(runs_dir / "toy")])
    assert readable.exit_code == 0, readable.output
    lines = readable.stdout.splitlines()
    assert lines[0] == f"A = {seed0}" and lines[2].split()[:4] == ["section", "field", "A", "B"]
    head_line = next(line for line in lines if line.split()[:2] == ["run", "head"])
    assert head_line.split()[2:] == ["trm", "toy-classifier-test-head"]
    assert any(line.split()[:2] == ["streams", "toy-x"] for line in lines)


def test_tensorboard_gets_lr_once_per_step_metrics_not_counts_and_hparams(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from heads.tb_log import ScalarLog

    log = ScalarLog(tmp_path / "tb")
    log.record({"kind": "step", "step": 20, "loss": 1.0, "data_wait_s": 0.1, "compute_s": 0.9},
               [0.1])
    log.record({"kind": "epoch", "step": 20, "train_loss": 1.0, "data_wait_share": 0.1,
                "steps_per_s": 5.0}, [0.1])  # the epoch's last step: the same step
    log.record({"kind": "eval", "step": 20, "split": "val",
                "metrics": {"FRC": 0.5, "speakers": 2}})
    log.hparams({"lr": 0.1, "milestones": [10, 20], "schedule": "linear"},
                {"FRC": 0.5, "speakers": 2}, "val", 20)
    log.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert len(events.Scalars("lr/group0")) == 1
    assert "val/FRC" in tags and "val/speakers" not in tags  # a count is not a metric
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["lr"].number_value == 0.1
    assert start.hparams["milestones"].string_value == "[10, 20]"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["hparam/val/FRC"]
    assert events.Scalars("hparam/val/FRC")[0].value == pytest.approx(0.5)


def test_valence_arousal_scatter_shows_predictions_outside_the_label_range():
    # TRM's predictions (-1.98, 2.07), (-2.19, 1.74) fell outside fixed [-1, 1] axes: an empty
    # plot above a caption saying "2 test clips".
    from matplotlib.patches import Rectangle

    from pipelines.report import va_scatter_axes

    pred = np.array([[-1.98, 2.07], [-2.19, 1.74]])
    truth = np.array([[0.2, -0.3], [-0.5, 0.6]])
    fig = va_scatter_axes(pred, truth, "test: cremad-va")
    for ax in fig.axes:
        low, high = ax.get_xlim()
        assert low < -2.19 and high > 2.07 and ax.get_ylim() == (low, high)
        squares = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert [(s.get_xy(), s.get_width(), s.get_height()) for s in squares] == [
            ((-1.0, -1.0), 2.0, 2.0)]  # the label range, marked


def test_curves_count_epochs_in_whole_numbers(tmp_path):
    from heads.plots import curves_figure

    records = [{"kind": "epoch", "epoch": e, "step": 10 * e, "train_loss": 1.0 / e}
               for e in (1, 2)]
    records += [{"kind": "eval", "epoch": e, "step": 10 * e, "metrics": {"ccc": 0.1 * e}}
                for e in (1, 2)]
    fig = curves_figure(records, "ccc")
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_xlabel(), ticks)


@pytest.mark.slow
def test_the_default_regnn_demo_ends_with_its_report(tmp_path):
    # Every other head's demo ended with `affect report`; the default (REGNN) one did not.
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "demo", "--out", str(tmp_path), "--clips", "4",
         "--seconds", "3", "--epochs", "1", "--device", "cpu"], capture_output=True, text=True,
        timeout=1500, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "$ affect report " in result.stdout
    parsed = check_page(tmp_path / "runs" / "regnn" / "report.html")
    assert any("Reactions over time" in h for h in parsed.headings), parsed.headings
    assert "RANDOM WEIGHTS" in (tmp_path / "runs" / "regnn" / "report.html").read_text()
