"""The REACT story, as `make demo` tells it: a generated REACT sample is extracted with the
recipe's encoders (random weights, reduced size), the media are deleted, and REGNN trains on the
store alone: its loss falls and its FRC beats the random baseline's.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from cli_results import json_document
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.samples import generate_sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_regnn_learns_from_the_store_alone(tmp_path):
    data = tmp_path / "react"
    generate_sample("react", data, clips=12, seconds=4, seed=0, size=32)
    store = str(tmp_path / "react.zarr")
    run = tmp_path / "run"
    cli_runner = CliRunner()
    _ok(cli_runner.invoke(cli, ["extract", "--dataset", "react", "--data-root", str(data),
                                "--store", store, "--weights", "random", "--reduced",
                                "--device", "cpu"]))
    shutil.rmtree(data)  # training must need nothing but the store
    _ok(cli_runner.invoke(cli, [
        "train", "--head", "regnn", "--store", store, "--out", str(run), "--epochs", "6",
        "--device", "cpu", "--quiet", "--set", "iterations_per_epoch=25",
        "--set", "batch_size=16", "--set", "threshold_at_iteration=10",
        "--set", "cross_layers=2", "--set", "self_layers=2", "--set", "eval_baselines=true",
    ]))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if r["kind"] == "epoch"]
    assert losses[-1] < losses[0]
    assert (run / "curves.png").stat().st_size > 0
    evaluated = cli_runner.invoke(cli, ["evaluate", "--run", str(run), "--split", "test",
                                        "--json"])
    metrics = json_document(evaluated)["metrics"]
    assert metrics["FRC"] > metrics["random/FRC"]
    exported = _ok(cli_runner.invoke(cli, ["predict", "--run", str(run), "--split", "test",
                                           "--export", str(tmp_path / "export")]))
    results = sorted((tmp_path / "export" / "test").rglob("result-*.pth"))
    assert len(results) == 10 * 2 * 1 and "wrote" in exported  # 10 per test speaker sample
    assert tuple(torch.load(results[0], weights_only=True).shape) == (100, 25)
