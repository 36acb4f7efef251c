"""Profiles and released checkpoints, told as a researcher's story.

A researcher trains a head with no settings and gets the paper's released behaviour; the run says
"paper" with no deviations. `--set profile=fixed` turns on every correction of that head at once,
and the run lists them; a single `--set` still overrides either profile. A run keeps the weights
the paper's scripts keep (best on validation, the last epoch or a fixed epoch). A paper's
released state dict becomes a run folder with `affect import-run`, strictly: every released key
used or named as ignored, every shape checked, nothing unpickled.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from safetensors.torch import save_file
from test_trainer import TinyConfig, TinyHead, build_tiny_store
from torch import nn

from features_store import UserError
from heads.base import apply_overrides
from heads.official import OfficialState, read_official_file
from heads.profile import corrections, deviations
from heads.registry import get_head, list_heads, register_head
from heads.trainer import _keeps, evaluate_run, import_run, read_run_config, train

SHIPPED = ("regnn", "transformer", "transformer-lstm", "transformer-attention", "fclstm-xl",
           "temporal_attention", "tpn_awm", "trm")


@dataclass
class ProfiledConfig(TinyConfig):
    FIXED: ClassVar[dict] = {"hidden": 24, "grad_clip": 1.0}


@register_head
class ProfiledHead(TinyHead):
    name = "tiny-profiled-head"
    config_cls = ProfiledConfig


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> str:
    return build_tiny_store(tmp_path_factory.mktemp("tiny") / "tiny.zarr")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_head_defaults_to_the_paper_and_its_fixed_profile_is_its_corrections(name):
    cls = get_head(name)
    assert name in list_heads()
    paper = cls.config_cls()
    assert paper.profile == "paper" and deviations(paper) == []
    fixed = apply_overrides(cls.config_cls(), ["profile=fixed"])
    assert fixed.profile == "fixed" and corrections(cls.config_cls)
    # every correction departs from the paper, and nothing else does
    assert set(deviations(fixed)) == set(corrections(cls.config_cls))
    # the precision of the released code: fp32 unless the paper used autocast
    assert paper.amp in ("off", "fp16")


def test_a_single_setting_overrides_either_profile_wherever_it_is_given():
    for order in (["hidden=7", "profile=fixed"], ["profile=fixed", "hidden=7"]):
        config = apply_overrides(ProfiledConfig(), order)
        assert (config.profile, config.hidden, config.grad_clip) == ("fixed", 7, 1.0)
        assert deviations(config) == ["grad_clip=1.0", "hidden=7"]
    back = apply_overrides(apply_overrides(ProfiledConfig(), ["profile=fixed"]),
                           ["profile=paper"])
    assert deviations(back) == [] and back.hidden == ProfiledConfig.hidden
    with pytest.raises(UserError, match="profile='best'.*paper, fixed"):
        apply_overrides(ProfiledConfig(), ["profile=best"])
    with pytest.raises(UserError, match="keep_checkpoint"):
        apply_overrides(ProfiledConfig(), ["keep_checkpoint=epoch:0"])


def test_runs_record_profile_and_deviations_everywhere(tiny_store, tmp_path, capsys):
    from pipelines.cli import main

    paper = tmp_path / "paper"
    train(ProfiledHead(ProfiledConfig()), tiny_store, paper, device="cpu", progress=False)
    saved = read_run_config(paper)
    assert (saved["profile"], saved["deviations"], saved["approximate"]) == ("paper", [], [])
    fixed = tmp_path / "fixed"
    train(ProfiledHead(apply_overrides(ProfiledConfig(), ["profile=fixed", "epochs=2"])),
          tiny_store, fixed, device="cpu", progress=False)
    saved = read_run_config(fixed)
    assert saved["profile"] == "fixed"
    assert saved["deviations"] == ["epochs=2", "grad_clip=1.0", "hidden=24"]
    payload = evaluate_run(fixed, "val", device="cpu")
    assert payload["profile"] == "fixed" and "hidden=24" in payload["deviations"]
    main(["runs", "ls", str(tmp_path)])
    table = capsys.readouterr().out
    assert "fixed: epochs=2, grad_clip=1.0, hidden=24" in table
    assert any(line.split()[2] == "paper" for line in table.splitlines()[1:] if "paper" in line)


def test_a_run_keeps_the_weights_its_paper_keeps(tiny_store, tmp_path):
    assert [_keeps("best", e, 5, improved) for e, improved in ((0, True), (1, False))] == \
        [True, False]
    assert all(_keeps("last", e, 5, False) for e in range(6))
    assert [e for e in range(6) if _keeps("epoch:3", e, 5, True)] == [2]
    assert [e for e in range(3) if _keeps("epoch:95", e, 2, False)] == [2]  # a shorter run
    last = train(ProfiledHead(apply_overrides(ProfiledConfig(), ["keep_checkpoint=last"])),
                 tiny_store, tmp_path / "last", device="cpu", progress=False)
    assert last.best_epoch == ProfiledConfig.epochs
    assert torch.load(tmp_path / "last/checkpoints/best.pt", weights_only=True)["epoch"] == \
        ProfiledConfig.epochs
    third = train(ProfiledHead(apply_overrides(ProfiledConfig(), ["keep_checkpoint=epoch:3"])),
                  tiny_store, tmp_path / "third", device="cpu", progress=False)
    assert third.best_epoch == 3


class _Released(nn.Module):
    """A stand-in for a paper's module: the same layers as TinyHead's under other names."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Linear(6, hidden)
        self.decoder = nn.Linear(hidden, 1)
        self.halting = nn.Linear(hidden, 1)  # a part the paper's settings never call


@register_head
class ImportingHead(TinyHead):
    name = "tiny-importing-head"

    def import_official(self, official, model):
        official.copy_prefix("0.", "encoder.")
        official.copy_prefix("3.", "decoder.")
        official.ignore("halting.", "never called with the paper's settings")


def test_a_released_state_dict_becomes_a_run_strictly(tiny_store, tmp_path):
    torch.manual_seed(0)
    released = _Released()
    file = tmp_path / "released.pth"
    torch.save({"epoch": 95, "state_dict": {f"module.{k}": v for k, v in
                                            released.state_dict().items()}}, file)
    run = import_run(ImportingHead(TinyConfig()), tiny_store, file, tmp_path / "run")
    saved = read_run_config(run)
    assert saved["profile"] == "paper" and saved["imported"]["tensors"] == 6
    assert saved["imported"]["ignored"] == {
        "halting.weight": "never called with the paper's settings",
        "halting.bias": "never called with the paper's settings"}
    weights = torch.load(run / "checkpoints/best.pt", weights_only=True)["model"]
    assert torch.equal(weights["0.weight"], released.encoder.weight)
    assert torch.equal(weights["3.bias"], released.decoder.bias)
    assert "mse" in evaluate_run(run, "val", device="cpu")["metrics"]

    # a key nobody maps, a shape that does not fit, a released file that is a pickle
    class Forgetful(ImportingHead):
        def import_official(self, official, model):
            official.copy_prefix("0.", "encoder.")
            official.copy_prefix("3.", "decoder.")

    with pytest.raises(UserError, match="released key 'halting.weight' is not used"):
        import_run(Forgetful(TinyConfig()), tiny_store, file, tmp_path / "forgetful")
    with pytest.raises(UserError, match=r"encoder.weight has shape \(16, 6\), our 0.weight "
                                        r"needs \(8, 6\)"):
        import_run(ImportingHead(TinyConfig(hidden=8)), tiny_store, file, tmp_path / "narrow")
    assert not (tmp_path / "forgetful").exists() and not (tmp_path / "narrow").exists()
    pickled = tmp_path / "pickled.pth"
    # released scripts often save their argparse namespace beside the weights
    torch.save({"state_dict": released.state_dict(), "args": argparse.Namespace(lr=1e-4)},
               pickled)
    with pytest.raises(UserError) as refused:
        read_official_file(pickled)
    assert "\n" not in str(refused.value) and "weights_only=False" not in str(refused.value)
    safetensors_file = tmp_path / "released.safetensors"
    save_file({k: v.contiguous() for k, v in released.state_dict().items()}, safetensors_file)
    assert set(read_official_file(safetensors_file)) == set(released.state_dict())


def test_the_import_run_command_prints_what_it_ignored(tiny_store, tmp_path, capsys):
    from pipelines.cli import main

    torch.manual_seed(0)
    file = tmp_path / "released.safetensors"
    save_file({k: v.contiguous() for k, v in _Released().state_dict().items()}, file)
    main(["import-run", "--head", "tiny-importing-head", "--from-official", str(file),
          "--out", str(tmp_path / "run"), "--store", tiny_store])
    out = capsys.readouterr().out
    assert "imported 6 tensors" in out and "profile paper" in out
    assert "ignored halting.weight: never called with the paper's settings" in out
    assert json.loads((tmp_path / "run/config.json").read_text())["head"] == \
        "tiny-importing-head"


def test_official_state_names_the_first_missing_key():
    model = nn.Linear(2, 3)
    state = OfficialState({"weight": torch.zeros(3, 2)}, model, "f.pth")
    state.copy("weight", "weight")
    with pytest.raises(UserError, match="nothing in the released file gives our 'bias'"):
        state.finish()
