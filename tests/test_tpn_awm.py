"""AWTPN on IEMOCAP (and MELD, CMU-MOSEI), from the store alone: a generated sample is extracted
with the audio and video streams the head reads (random weights, reduced size), the media are
deleted, and the head learns the planted emotions well above the majority-class weighted F1,
resumes to the same result, masks variable-length sequences exactly, and serves a second
configuration (the released code's inter-loss sign) from the same store.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from cli_results import json_document
from click.testing import CliRunner

from heads.base import apply_overrides
from heads.metrics import weighted_f1
from heads.registry import get_head
from heads.tpn_awm.head import class_ids, derangement
from heads.tpn_awm.model import Awtpn, awtpn_losses
from heads.trainer import load_run, train
from pipelines.cli import cli, main
from pipelines.samples import generate_sample

# Paper defaults except a larger learning rate for a 48-utterance sample, and z-normalised
# inputs (random-weight features share a large common offset the align loss collapses onto).
# The last epoch is kept: the held-out validation speaker has 3-4 utterances here, too few to
# pick an epoch on.
FAST = ["lr=1e-3", "normalize=true", "keep_checkpoint=last"]
ENCODERS = "wav2vec2-base,clip-vit-b16"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def _extract(tmp_path_factory, layout: str, clips: int):
    base = tmp_path_factory.mktemp(layout)
    data = base / layout
    generate_sample(layout, data, clips=clips, seconds=2, seed=0, size=32)
    store = base / f"{layout}.zarr"
    _ok(CliRunner().invoke(cli, ["extract", "--dataset", layout, "--data-root", str(data),
                                 "--store", str(store), "--encoders", ENCODERS,
                                 "--weights", "random", "--reduced", "--device", "cpu"]))
    shutil.rmtree(data)  # the head must need nothing but the store
    return store


@pytest.fixture(scope="module")
def iemocap_store(tmp_path_factory):
    return _extract(tmp_path_factory, "iemocap", 60)


def _head(*sets: str):
    cls = get_head("tpn_awm")
    return cls(apply_overrides(cls.config_cls(), [*FAST, *sets]))


def _store_files(store) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in store.rglob("*")
            if p.is_file()}


def _majority_wf1(run) -> tuple[float, int]:
    """Weighted F1 of always predicting the train split's most frequent class, and the classes."""
    data = load_run(run, device="cpu").data
    majority = np.bincount(data.split("train").labels).argmax()
    test = data.split("test").labels
    return weighted_f1(test, np.full_like(test, majority), len(data.classes)), len(data.classes)


def test_learns_the_planted_emotions_from_the_store_alone(iemocap_store, tmp_path):
    before = _store_files(iemocap_store)
    run = tmp_path / "run"
    runner = CliRunner()
    _ok(runner.invoke(cli, ["train", "--head", "tpn_awm", "--store", str(iemocap_store),
                            "--out", str(run), "--epochs", "10", "--device", "cpu", "--quiet",
                            *[a for s in FAST for a in ("--set", s)]]))
    config = json.loads((run / "config.json").read_text())
    # IEMOCAP: no validation split in the protocol (one training speaker is held out, never
    # session 5), 6 classes, the paper's batch of 8
    assert config["config"]["val_split"] == "val" and config["config"]["batch_size"] == 8
    assert len(config["config"]["val_carved"]) == 1 and config["profile"] == "paper"
    assert set(config["streams"]) == {"wav2vec2-base", "clip-vit-b16", "iemocap-emotion"}
    metrics = json_document(runner.invoke(cli, ["evaluate", "--run", str(run), "--split",
                                                 "test", "--json"]))["metrics"]
    baseline, classes = _majority_wf1(run)
    print(f"tpn_awm on the IEMOCAP sample: test w-F1 {metrics['w-F1']:.3f} (majority class "
          f"{baseline:.3f}), w-ACC {metrics['w-ACC']:.3f}")
    assert classes == 6
    assert metrics["w-F1"] >= baseline + 0.15
    _ok(runner.invoke(cli, ["predict", "--run", str(run), "--split", "test"]))
    rows = (run / "predictions/test/test_predictions.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["clip_id", "predicted", "hap"] and len(rows) == 13
    # our corrections: a second configuration on the same cached streams
    other = tmp_path / "fixed"
    train(_head("profile=fixed", "epochs=1"), str(iemocap_store), other, device="cpu",
          progress=False)
    assert json.loads((other / "config.json").read_text())["streams"] == config["streams"]
    assert _store_files(iemocap_store) == before
    merged = _ok(runner.invoke(cli, ["ensemble", "--runs", f"{run},{other}", "--split", "test",
                                     "--export", str(tmp_path / "ensemble"), "--json"]))
    assert (tmp_path / "ensemble/test_predictions.csv").exists() and '"w-F1"' in merged


def test_resume_gives_the_uninterrupted_result(iemocap_store, tmp_path):
    whole = train(_head("epochs=3"), str(iemocap_store), tmp_path / "whole", device="cpu",
                  progress=False)
    train(_head("epochs=3"), str(iemocap_store), tmp_path / "parts", device="cpu",
          progress=False, stop_after=1)
    resumed = train(_head("epochs=3"), str(iemocap_store), tmp_path / "parts", device="cpu",
                    progress=False, resume=True)
    assert resumed.final_metrics["w-F1"] == whole.final_metrics["w-F1"]
    a = torch.load(tmp_path / "whole/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "parts/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_utterance_gives_the_same_output_alone_as_in_a_padded_batch():
    torch.manual_seed(0)
    model = Awtpn(5, 7, 4, shared_dim=16, dropout=0.1, distance_scale_audio=1.0,
                  distance_scale_video=1.0, alpha_audio=0.3, beta_video=0.7).eval()
    short_a, short_v = torch.randn(1, 3, 5), torch.randn(1, 2, 7)
    long_a, long_v = torch.randn(1, 9, 5), torch.randn(1, 6, 7)
    alone = model(short_a, torch.ones(1, 3, dtype=torch.bool), short_v,
                  torch.ones(1, 2, dtype=torch.bool))
    audio = torch.cat([torch.nn.functional.pad(short_a, (0, 0, 0, 6), value=9.0), long_a])
    video = torch.cat([torch.nn.functional.pad(short_v, (0, 0, 0, 4), value=9.0), long_v])
    audio_mask = torch.arange(9)[None] < torch.tensor([[3], [9]])
    video_mask = torch.arange(6)[None] < torch.tensor([[2], [6]])
    batched = model(audio, audio_mask, video, video_mask)
    assert torch.allclose(alone["logits"][0], batched["logits"][0], atol=1e-6)
    assert torch.all(batched["w_a"][0, 3:] == 0) and torch.all(batched["w_v"][0, 2:] == 0)
    target = torch.tensor([1, 2])
    negatives = torch.tensor([1, 0])
    losses = awtpn_losses(batched, target, audio_mask, video_mask, negatives, negatives,
                          inter_margin=1.0, contrast_margin=1.0, inter_sign="correct")
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_inter_loss_pulls_matched_pairs_together_unless_the_original_sign_is_asked():
    a = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    out = {"logits": torch.zeros(2, 2), "a": a, "v": a.clone(), "d_a": torch.zeros(2, 1, 2),
           "d_v": torch.zeros(2, 1, 2)}
    mask = torch.ones(2, 1, dtype=torch.bool)
    swap = torch.tensor([1, 0])

    def inter(sign: str) -> float:
        return float(awtpn_losses(out, torch.tensor([0, 1]), mask, mask, swap, swap,
                                  inter_margin=0.5, contrast_margin=1.0,
                                  inter_sign=sign)["inter"])

    # matched audio and video agree, the negative is orthogonal: nothing to correct ...
    assert inter("correct") == 0.0
    # ... while the released code's sign penalises exactly this agreement
    assert inter("original") == pytest.approx(1.5)


def test_class_ids_and_negatives():
    mosei = np.array([[0, 2, 1, 0, 0, 0, -2], [0, 0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 3, 1]])
    assert list(class_ids(mosei, "mosei")) == [1, -1, 5]  # no emotion: no class
    assert list(class_ids(np.array([[3], [0]]), "iemocap")) == [3, 0]
    rng = np.random.default_rng(0)
    for n in (2, 3, 8):
        perm = derangement(rng, n)
        assert sorted(perm) == list(range(n)) and np.all(perm != np.arange(n))


def test_a_store_without_the_audio_stream_names_it_and_the_command(tmp_path, capsys):
    data = tmp_path / "iemocap"
    generate_sample("iemocap", data, clips=10, seconds=1, seed=0, size=16)
    store = tmp_path / "labels-only.zarr"
    main(["ingest", "--dataset", "iemocap", "--data-root", str(data), "--store", str(store)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--head", "tpn_awm", "--store", str(store), "--out",
              str(tmp_path / "run"), "--device", "cpu", "--quiet"])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "needs stream 'wav2vec2-base'" in lines[0]
    assert f"affect extract --dataset iemocap --data-root DATA --store {store} --encoders " \
           "wav2vec2-base" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("layout,clips,classes", [("meld", 42, 7), ("mosei", 36, 6)])
def test_meld_and_mosei_learn_from_their_stores(tmp_path_factory, tmp_path, layout, clips,
                                                classes):
    store = _extract(tmp_path_factory, layout, clips)
    run = tmp_path / "run"
    train(_head("epochs=15"), str(store), run, device="cpu", progress=False)
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["dataset"] == layout and config["val_split"] == "val"
    assert config["batch_size"] == 16
    metrics = json_document(CliRunner().invoke(cli, ["evaluate", "--run", str(run),
                                                      "--split", "test", "--json"]))["metrics"]
    baseline, n_classes = _majority_wf1(run)
    print(f"tpn_awm on the {layout} sample: test w-F1 {metrics['w-F1']:.3f} (majority class "
          f"{baseline:.3f}), w-ACC {metrics['w-ACC']:.3f}")
    assert n_classes == classes
    assert metrics["w-F1"] > baseline


def test_the_dataset_settles_labels_batch_and_validation_split(tmp_path):
    from features_store import UserError, open_store

    store = open_store(str(tmp_path / "s.zarr"), "a", dataset="iemocap")
    store.add_clips([{"clip_id": "a", "split": "train"}, {"clip_id": "c", "split": "train"},
                     {"clip_id": "d", "split": "train"}, {"clip_id": "b", "split": "test"}])
    held_out = "acd"[np.random.RandomState(0).permutation(3)[0]]  # no speakers: utterances
    head = get_head("tpn_awm")()
    head._settle(store)
    c = head.config
    assert (c.dataset, c.label_stream, c.batch_size, c.val_split, c.val_carved) == \
        ("iemocap", "iemocap-emotion", 8, "val", (f"clip:{held_out}",))
    assert head.recipe().labels == ["iemocap-emotion"]
    own = _head("batch_size=32")
    own._settle(store)
    assert own.config.batch_size == 32  # a batch size of one's own is kept
    sixteen = _head("preset_batch_size=false")
    sixteen._settle(store)
    assert sixteen.config.batch_size == 16
    with pytest.raises(UserError, match="inter_sign"):
        _head("inter_sign=reversed")._settle(store)
