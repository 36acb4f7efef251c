"""The shared trainer, told as a user's story with a tiny head on a tiny store.

A researcher trains a small per-frame regressor; the trainer keeps the best checkpoint by the
head's validation metric, writes metrics.jsonl and curves.png, stops early when the metric stops
improving, and a run interrupted after two epochs and resumed ends exactly where an
uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from features_store import StreamInfo, UserError, open_store
from heads.base import Head, HeadConfig, Recipe, apply_overrides, config_from_dict, config_to_dict
from heads.data import load_frame_sequences, split_clip_ids
from heads.plots import read_metrics
from heads.registry import get_head, list_heads, register_head
from heads.trainer import LrSchedule, evaluate_run, load_run, train


def build_tiny_store(path: Path, seed: int = 0) -> str:
    """8 train + 3 val clips of 6-d features at 10 Hz; target = a fixed linear map + noise."""
    rng = np.random.default_rng(seed)
    store = open_store(str(path), mode="a", dataset="tiny")
    feats = store.create_stream(StreamInfo(name="tiny-x", kind="feature", dim=6,
                                           frame_shift_s=0.1))
    target = store.create_stream(StreamInfo(name="tiny-y", kind="label", dim=1,
                                            frame_shift_s=0.1))
    weights = rng.normal(size=(6, 1))
    clips = []
    with store.part_writer(feats, "p0") as fx, store.part_writer(target, "p0") as fy:
        for k in range(11):
            n = int(rng.integers(40, 80))
            x = rng.normal(size=(n, 6)).astype(np.float32)
            fx.write_clip(f"c{k:02d}", x)
            fy.write_clip(f"c{k:02d}", x @ weights + 0.1 * rng.normal(size=(n, 1)))
            clips.append({"clip_id": f"c{k:02d}", "split": "train" if k < 8 else "val"})
    store.add_clips(clips)
    store.finalize()
    return str(path)


@dataclass
class TinyConfig(HeadConfig):
    epochs: int = 6
    batch_size: int = 32
    lr: float = 0.02
    hidden: int = 16


@register_head
class TinyHead(Head):
    """Per-frame MLP regressor; metric = validation MSE (mode min), with dropout so the resume
    test also covers torch's RNG."""

    name = "tiny-test-head"
    config_cls = TinyConfig
    default_dataset = "tiny"
    metric_name = "mse"
    metric_mode = "min"

    def recipe(self) -> Recipe:
        return Recipe(features=["tiny-x"], labels=["tiny-y"])

    def build_data(self, store):
        return {split: load_frame_sequences(store, split_clip_ids(store, split, ["tiny-x"]),
                                            ["tiny-x"], "tiny-y", invalid_value=None)
                for split in ("train", "val")}

    def build_model(self, data) -> nn.Module:
        hidden = self.config.hidden
        return nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Dropout(0.2),
                             nn.Linear(hidden, 1))

    def train_batches(self, data, epoch, rng):
        seqs = data["train"]
        order = rng.permutation(len(seqs.features))
        for start in range(0, len(order), self.config.batch_size):
            rows = order[start : start + self.config.batch_size]
            yield torch.from_numpy(seqs.features[rows]), torch.from_numpy(seqs.labels[rows])

    def training_step(self, model, batch):
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    def predict(self, model, data, split):
        seqs = data[split]
        return model(torch.from_numpy(seqs.features)).numpy()

    def score(self, predictions, data, split):
        return {"mse": float(np.mean((predictions - data[split].labels) ** 2))}

    def export(self, predictions, data, split, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{split}.npy"
        np.save(path, predictions)
        return [path]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> str:
    return build_tiny_store(tmp_path_factory.mktemp("tiny") / "tiny.zarr")


def tiny(**changes) -> TinyHead:
    return TinyHead(apply_overrides(TinyConfig(), [f"{k}={v}" for k, v in changes.items()]))


def test_training_keeps_the_best_checkpoint_and_writes_curves(tiny_store, tmp_path):
    run = tmp_path / "run"
    result = train(tiny(), tiny_store, run, device="cpu", progress=False, log_every=1)

    records = read_metrics(run / "metrics.jsonl")
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2, 3, 4, 5, 6]
    assert any(r["kind"] == "step" for r in records)
    best = min(evals, key=lambda r: r["metrics"]["mse"])
    assert result.best_epoch == best["epoch"]
    assert result.best_metric == pytest.approx(best["metrics"]["mse"])
    assert best["metrics"]["mse"] < evals[0]["metrics"]["mse"]  # it learned

    saved = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert saved["epoch"] == best["epoch"]
    eval_file = json.loads((run / "eval-val.json").read_text())
    assert eval_file["metrics"]["mse"] == pytest.approx(best["metrics"]["mse"])

    # evaluating the run again from its folder scores the best checkpoint identically
    again = evaluate_run(run, "val", device="cpu")
    assert again["metrics"]["mse"] == pytest.approx(best["metrics"]["mse"], rel=1e-5)

    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((run / "config.json").read_text())
    assert config["head"] == "tiny-test-head"
    assert set(config["streams"]) == {"tiny-x", "tiny-y"}
    assert config["streams"]["tiny-x"].startswith("tiny-x-")  # the key, not just the alias
    epoch_records = [r for r in records if r["kind"] == "epoch"]
    assert all(0.0 <= r["data_wait_share"] <= 1.0 for r in epoch_records)


def test_resumed_run_matches_an_uninterrupted_run(tiny_store, tmp_path):
    straight = train(tiny(), tiny_store, tmp_path / "straight", device="cpu", progress=False)

    interrupted = tmp_path / "interrupted"
    first = train(tiny(), tiny_store, interrupted, device="cpu", progress=False, stop_after=2)
    assert first.epochs_done == 2
    resumed = train(tiny(), tiny_store, interrupted, device="cpu", progress=False, resume=True)
    assert resumed.epochs_done == 6

    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(interrupted / "checkpoints" / "last.pt", weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert resumed.best_metric == straight.best_metric
    assert resumed.best_epoch == straight.best_epoch
    evals = [r["metrics"] for r in read_metrics(interrupted / "metrics.jsonl")
             if r["kind"] == "eval"]
    assert evals == [r["metrics"] for r in read_metrics(tmp_path / "straight" / "metrics.jsonl")
                     if r["kind"] == "eval"]


def test_early_stop_when_the_metric_stops_improving(tiny_store, tmp_path):
    # lr 0: the metric never improves after the first evaluation
    result = train(tiny(lr=0.0, patience=2, epochs=10), tiny_store, tmp_path / "run",
                   device="cpu", progress=False)
    assert result.stopped_early
    assert result.epochs_done == 3
    assert result.best_epoch == 1


def test_run_folder_mistakes_are_one_line_user_errors(tiny_store, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        train(tiny(), tiny_store, tmp_path / "new", device="cpu", progress=False, resume=True)
    train(tiny(epochs=1), tiny_store, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(UserError, match="already has checkpoints"):
        train(tiny(epochs=1), tiny_store, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(UserError, match="no such store"):
        train(tiny(), tmp_path / "missing.zarr", tmp_path / "r2", device="cpu", progress=False)
    assert not (tmp_path / "r2").exists()
    with pytest.raises(UserError, match="not a run folder"):
        load_run(tmp_path / "nothing")


def test_grad_accumulation_steps_the_optimiser_once_per_group(tiny_store, tmp_path):
    head = tiny(epochs=1, grad_accum=3)
    train(head, tiny_store, tmp_path / "run", device="cpu", progress=False)
    seqs = head.build_data(open_store(tiny_store, mode="r"))["train"]
    n_frames = len(seqs.features)
    batches = -(-n_frames // head.config.batch_size)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["global_step"] == -(-batches // 3)


def _lrs(config: HeadConfig, epochs: int, steps_per_epoch: int = 1, metrics=None):
    model = nn.Linear(1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = LrSchedule(optimizer, config)
    out = []
    for epoch in range(epochs):
        schedule.start_epoch(epoch)
        for _ in range(steps_per_epoch):
            out.append(schedule.lrs()[0])
            schedule.step()
        schedule.end_epoch(None if metrics is None else metrics[epoch])
    return out


def test_learning_rate_schedules():
    linear = _lrs(HeadConfig(lr=1.0, schedule="linear", epochs=5, constant_epochs=2), 5)
    # 2 constant epochs, then 1 - k/(3+1) over the 3 decaying ones
    assert linear == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.25])
    multistep = _lrs(HeadConfig(lr=1.0, schedule="multistep", milestones=(1, 3)), 4)
    assert multistep == pytest.approx([1.0, 0.1, 0.1, 0.01])
    warm = _lrs(HeadConfig(lr=1.0, schedule="warmup_step", warmup_steps=4, warmup_factor=0.2,
                           milestones=(2,), gamma=0.5), 3, steps_per_epoch=2)
    assert warm == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.5, 0.5])
    plateau = _lrs(HeadConfig(lr=1.0, schedule="plateau", plateau_patience=1, plateau_factor=0.5),
                   5, metrics=[0.5, 0.6, 0.6, 0.6, 0.6])
    # best 0.6 at epoch 1; epochs 2 and 3 do not improve: the second exceeds patience 1
    assert plateau == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5])


def test_set_overrides_parse_to_the_field_types():
    config = apply_overrides(TinyConfig(), ["hidden=8", "lr=1e-3", "milestones=10,20",
                                            "betas=0.5,0.999", "amp=off", "grad_clip=5"])
    assert (config.hidden, config.lr, config.milestones, config.betas) == (
        8, 1e-3, (10, 20), (0.5, 0.999))
    assert config_from_dict(TinyConfig, json.loads(json.dumps(config_to_dict(config)))) == config
    with pytest.raises(UserError, match="unknown field"):
        apply_overrides(TinyConfig(), ["hiden=8"])
    with pytest.raises(UserError, match="not a valid int"):
        apply_overrides(TinyConfig(), ["hidden=eight"])


def test_registry_knows_the_heads_and_names_them_on_a_typo():
    assert {"tiny-test-head", "transformer-lstm", "fclstm-xl"} <= set(list_heads())
    assert get_head("tiny-test-head") is TinyHead
    with pytest.raises(UserError, match="known heads: .*transformer-lstm"):
        get_head("transfomer-lstm")


def test_cli_trains_and_resumes_a_run(tiny_store, tmp_path):
    from click.testing import CliRunner

    from pipelines.cli.heads import train as train_command

    run = str(tmp_path / "run")
    runner = CliRunner()
    result = runner.invoke(train_command, ["--head", "tiny-test-head", "--store", tiny_store,
                                           "--out", run, "--epochs", "1", "--set", "hidden=8",
                                           "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "trained tiny-test-head: 1 of 1 epochs" in result.stdout  # readable by default
    result = runner.invoke(train_command, ["--out", run, "--resume", "--epochs", "2",
                                           "--device", "cpu", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs_done"] == 2  # stdout is one JSON document
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["hidden"] == 8 and saved["config"]["epochs"] == 2
    result = runner.invoke(train_command, ["--head", "tiny-test-head", "--store", tiny_store,
                                           "--set", "hidden=big", "--out", run])
    assert isinstance(result.exception, UserError)


def test_a_missing_or_broken_head_package_is_named_not_raised_at_import(monkeypatch, tmp_path):
    import sys

    import heads.registry as registry

    (tmp_path / "broken_head_pkg.py").write_text("raise RuntimeError('bad weights table')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_BUILTIN_MODULES", ("heads.gone_head", "broken_head_pkg"))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_LOAD_ERRORS", {})
    monkeypatch.setattr(registry, "_MISSING", set())
    monkeypatch.delitem(sys.modules, "broken_head_pkg", raising=False)
    with pytest.raises(UserError, match="heads.gone_head is not in this installation"):
        get_head("gone-head")
    with pytest.raises(UserError, match="broken_head_pkg: RuntimeError: bad weights table"):
        get_head("other")
    assert "tiny-test-head" in list_heads()  # the heads that did load stay usable


class _RunsCode:
    """Unpickling this creates a file: proof that a loader ran code from the checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tiny_store, tmp_path):
    # Someone shares a run folder whose best.pt was replaced by a pickle that runs a command.
    run = tmp_path / "run"
    train(tiny(epochs=1), tiny_store, run, device="cpu", progress=False)
    marker = tmp_path / "code-ran"
    saved = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    saved["head_state"] = {"x": _RunsCode(marker)}
    torch.save(saved, run / "checkpoints" / "best.pt")
    torch.save({"model": _RunsCode(marker)}, run / "checkpoints" / "last.pt")

    with pytest.raises(UserError) as refused:
        load_run(run, device="cpu")
    assert "\n" not in str(refused.value) and "best.pt" in str(refused.value)
    assert "posix.system" in str(refused.value) or "system" in str(refused.value)
    with pytest.raises(UserError, match="last.pt"):
        train(tiny(epochs=2), tiny_store, run, device="cpu", progress=False, resume=True)
    assert not marker.exists()


def test_counts_stay_counts_in_saved_metrics():
    # `affect evaluate` printed REGNN's "speakers 2.0000": a count saved as a float.
    from heads.trainer import _json_ready

    saved = _json_ready({"speakers": 2, "n": np.int64(7), "FRC": 0.5, "ccc": np.float32(0.25),
                         "confusion": np.eye(2)})
    assert saved["speakers"] == 2 and type(saved["speakers"]) is int
    assert type(saved["n"]) is int and type(saved["FRC"]) is float
    assert type(saved["ccc"]) is float and saved["confusion"] == [[1.0, 0.0], [0.0, 1.0]]


# --- what training prints ----------------------------------------------------------------------

EPOCH_LINE = (r"tiny-test-head epoch (\d+)/3 \| train_loss \d+\.\d{4} \| val mse \d+\.\d{4} \| "
              r"best mse \d+\.\d{4} \(epoch \d\) \| \d+\.\d s/epoch \| ETA \d+s")


def test_epoch_lines_in_a_log_are_lines_not_bar_redraws(tiny_store, tmp_path):
    # stderr is not a terminal (CliRunner's, as a SLURM log or a pipe): one readable line per
    # epoch, no carriage-return redraws; stdout ends with a readable summary, JSON only asked.
    import re

    from click.testing import CliRunner

    from pipelines.cli.heads import train as train_command

    run = str(tmp_path / "run")
    runner = CliRunner()
    args = ["--head", "tiny-test-head", "--store", tiny_store, "--out", run, "--epochs", "3",
            "--set", "hidden=8", "--device", "cpu"]
    result = runner.invoke(train_command, [*args, "--set", "patience=0"])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "epoch" in line]
    assert [int(re.fullmatch(EPOCH_LINE, line).group(1)) for line in lines] == [1, 2, 3], lines
    assert lines[-1].endswith("ETA 0s")
    summary = result.stdout
    assert summary.startswith("trained tiny-test-head: 3 of 3 epochs in ")
    assert re.search(r"best mse \d+\.\d{4} at epoch \d on val", summary), summary
    assert "seed 0" in summary and not summary.lstrip().startswith("{")

    # --resume says where it continues; --json prints only JSON on stdout
    result = runner.invoke(train_command, ["--out", run, "--resume", "--epochs", "4",
                                           "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert f"resuming after epoch 3 of 4 from {run}/checkpoints/last.pt" in result.stderr
    assert re.search(r"tiny-test-head epoch 4/4 \| ", result.stderr)
    assert json.loads(result.stdout)["epochs_done"] == 4


def test_epoch_lines_on_a_terminal_come_above_the_bar(tiny_store, tmp_path):
    # A real pseudo-terminal: the bar is drawn (carriage returns) and each epoch still gets its
    # readable line.
    import fcntl
    import pty
    import re
    import struct
    import termios
    import threading

    from heads.train_progress import TrainProgress

    leader, follower = pty.openpty()
    # a terminal 100 columns wide (a new pseudo-terminal has 0, where a bar has no room)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    received = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with open(follower, "w", closefd=True) as terminal:
        assert terminal.isatty()
        progress = TrainProgress("tiny-test-head", stream=terminal)
        train(tiny(epochs=3, hidden=8, patience=0), tiny_store, tmp_path / "run", device="cpu",
              progress=progress)
        terminal.flush()
    reader.join(timeout=10)
    os.close(leader)
    text = received.decode(errors="replace")
    # tqdm drew (and redrew) its bar on the terminal
    assert "\rtiny-test-head epoch 1/3: " in text and "it/s" in text
    lines = [re.search(EPOCH_LINE, line) for line in text.replace("\r", "\n").splitlines()]
    assert [int(m.group(1)) for m in lines if m] == [1, 2, 3], text[-2000:]


def test_train_argument_errors_come_before_torch_is_imported(tiny_store, tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    train(tiny(epochs=1), tiny_store, run, device="cpu", progress=False)
    cases = [
        ([], "--head is required"),
        (["--head", "tiny-test-head", "--store", str(tmp_path / "missing.zarr")],
         "no such store"),
        (["--head", "tiny-test-head", "--store", tiny_store, "--out", str(run)],
         "already has checkpoints"),
        (["--resume"], "--resume needs --out"),
        (["--resume", "--out", str(tmp_path / "none")], "not a run folder"),
    ]
    for args, message in cases:
        code = ("import sys\nfrom pipelines.cli import main\ntry:\n"
                f"    main(['train', *{args!r}])\nexcept SystemExit as exit:\n"
                "    print('exit', exit.code, 'torch' in sys.modules)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=120)
        assert done.stdout.strip().splitlines()[-1] == "exit 2 False", (args, done.stdout,
                                                                        done.stderr[-1000:])
        assert message in done.stderr, (args, done.stderr)
