"""Affective-TRM from the store alone.

Story: a researcher generates the CREMA-D sample (emotion -> colour and pitch), extracts the
recipe's three streams (random weights, reduced size) and deletes the media. The TRM head then
learns the clips' valence/arousal well above CCC 0 on the held-out actors with our corrections
(`profile=fixed`), and the same store serves a second TRM configuration (the released
per-frame-reset mode, the paper profile, audio+video only) without extracting again (slow: the
extraction dominates). On a store written directly with the recipe's aliases (audio at 50 Hz, so
it is mean-pooled onto the 25 Hz video clock in the fixed profile) the same head learns in
seconds; a run resumed from a checkpoint ends exactly where an uninterrupted one
does; and a store that lacks the text stream is refused with one line naming the stream and the
`affect extract` command that makes it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from features_store import UserError, open_store
from heads.base import apply_overrides
from heads.registry import get_head
from heads.trainer import evaluate_run, train
from heads.trm.head import trm_loss
from heads.trm.model import TinyRecursiveModel
from pipelines.cli import cli, main
from pipelines.samples import generate_sample
from pipelines.synthetic.feature_stores import cremad_like_store

# A small model that learns in seconds on one core; everything else keeps the paper's defaults.
SMALL = ["hidden=64", "heads=4", "batch_size=8", "lr=1e-2"]
# The extracted sample has fewer clips: smaller batches, more epochs.
SAMPLE = ["batch_size=4", "lr=3e-3", "epochs=12"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> str:
    """60 clips of 20 actors (16/2/2 by actor), narrow streams, audio at twice the video rate."""
    return cremad_like_store(tmp_path_factory.mktemp("trm-small") / "cremad.zarr", 60,
                             frames=8, actors=20, audio_shift_s=0.02, noise=0.5,
                             dims={"dasheng-base": 16, "hsemotion-enet-b0": 24,
                                   "embeddinggemma": 8})


@pytest.fixture(scope="module")
def crema_store(tmp_path_factory) -> str:
    """Sample -> `affect extract` (recipe encoders) -> media deleted; returns the store path."""
    base = tmp_path_factory.mktemp("trm")
    root = base / "CREMA-D"
    generate_sample("cremad", root, clips=40, seconds=0.8, seed=3, size=32)
    store_path = str(base / "cremad.zarr")
    torch.set_num_threads(1)
    result = CliRunner().invoke(cli, [
        "extract", "--dataset", "cremad", "--data-root", str(root), "--store", store_path,
        "--weights", "random", "--reduced", "--device", "cpu", "--batch-size", "64",
    ])
    assert result.exit_code == 0, result.output
    shutil.rmtree(root)  # heads read only the store
    return store_path


def trm(*changes: str):
    cls = get_head("trm")
    return cls(apply_overrides(cls.config_cls(), [*SMALL, *changes]))


def stream_keys(store_path: str) -> dict[str, str]:
    return {s.alias: s.key for s in open_store(store_path, "r").streams()}


@pytest.mark.slow
def test_trm_learns_the_planted_valence_arousal_of_the_cremad_sample(crema_store, tmp_path):
    keys_before = stream_keys(crema_store)
    train(trm(*SAMPLE, "profile=fixed"), crema_store, tmp_path / "run", device="cpu",
          progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    # the run names the exact cached tensors it read: audio, video, text and the labels
    assert set(config["streams"]) == {"dasheng-base", "hsemotion-enet-b0", "embeddinggemma",
                                      "cremad-va"}
    scores = {split: evaluate_run(tmp_path / "run", split, device="cpu")["metrics"]
              for split in ("val", "test")}
    for split, metrics in scores.items():
        # held-out actors: a constant or random predictor scores CCC 0
        assert metrics["ccc_mean"] > 0.3, (split, metrics)
        assert metrics["ccc_v"] > 0.2 and metrics["ccc_a"] > 0.2, (split, metrics)
    assert (tmp_path / "run" / "eval-test.json").exists()

    # a second configuration on the same store: the released mode, audio + video only
    second = train(trm(*SAMPLE, "text="), crema_store, tmp_path / "orig",
                   device="cpu", progress=False)
    # the released mode learns less here: one frame per clip (its last: audio only, since the
    # recipe's MTCNN finds no face in the generated frames and the video rows are zeros)
    assert second.best_metric is not None and second.best_metric > 0.1
    store = open_store(crema_store, "r")
    assert not store.read_clip("hsemotion-enet-b0", store.clip_ids("val")[0]).any()
    other = json.loads((tmp_path / "orig" / "config.json").read_text())
    assert set(other["streams"]) == {"dasheng-base", "hsemotion-enet-b0", "cremad-va"}
    for alias in other["streams"]:
        assert other["streams"][alias] == config["streams"][alias]  # the same cached tensors
    assert stream_keys(crema_store) == keys_before  # nothing was extracted again


def test_trm_learns_from_aligned_streams_of_different_rates(small_store, tmp_path):
    result = train(trm("epochs=6", "profile=fixed"), small_store, tmp_path / "run", device="cpu",
                   progress=False)
    test = evaluate_run(tmp_path / "run", "test", device="cpu")["metrics"]
    # held-out actors (val picks the checkpoint, test is unseen): CCC 0 is a constant predictor
    assert result.best_metric > 0.5 and test["ccc_mean"] > 0.5, (result.best_metric, test)
    keys = stream_keys(small_store)
    second = train(trm("epochs=6", "text="), small_store, tmp_path / "orig",
                   device="cpu", progress=False)
    # the released mode (the paper profile) on the same cached features: it learns, though
    # less (8-frame clips: 30 rows sampled from fewer frames repeat frame 0, and a clip shorter
    # than its batch's longest is predicted from the padded zero step)
    assert second.final_metrics["ccc_mean"] > 0.1
    streams = json.loads((tmp_path / "orig" / "config.json").read_text())["streams"]
    assert streams == {alias: keys[alias] for alias in
                       ("dasheng-base", "hsemotion-enet-b0", "cremad-va")}
    assert stream_keys(small_store) == keys


@pytest.mark.parametrize("watched,mode", [("loss", "min"), ("ccc_mean", "max")])
def test_the_plateau_schedule_steps_on_the_validation_loss_as_the_public_code(
        small_store, tmp_path, watched, mode):
    """The public code steps ReduceLROnPlateau on its validation loss (the default here);
    `plateau_metric=ccc_mean` steps on the CCC. Checked against torch's own scheduler fed the
    same validation values."""
    sets = ["epochs=6", "plateau_patience=0", "lr=0.1"] + (["plateau_metric=ccc_mean"]
                                                  if watched != "loss" else [])
    train(trm(*sets), small_store, tmp_path / "run", device="cpu", progress=False)
    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["kind"] == "epoch"]
    values = [r["metrics"][watched] for r in records if r["kind"] == "eval"]
    assert len(values) == 6 and all(np.isfinite(values))
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.AdamW([parameter], lr=lrs[0])
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode=mode, factor=0.5,
                                                           patience=0)
    expected = []
    for value in values:
        expected.append(optimiser.param_groups[0]["lr"])
        reference.step(value)
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert len(set(lrs)) > 1  # the schedule did act on this run


def test_the_validation_loss_is_the_mean_of_the_public_codes_batches():
    from heads.trm.data import AlignedClips

    rng = np.random.default_rng(0)
    lengths = np.array([3, 5, 2, 4, 6])
    clips = AlignedClips(clip_ids=[f"c{i}" for i in range(5)], features=np.zeros((20, 1)),
                         offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                         lengths=lengths, targets=rng.normal(size=(5, 2)).astype(np.float32),
                         frame_shift_s=0.04, slices={})
    predictions = {c: rng.normal(size=(n, 2)).astype(np.float32)
                   for c, n in zip(clips.clip_ids, lengths)}
    head = trm("batch_size=2", "ccc_formula=standard")
    batches = [[0, 1], [2, 3], [4]]  # the clips in order, two at a time
    expected = []
    for batch in batches:
        p = np.concatenate([predictions[f"c{i}"] for i in batch])
        t = np.concatenate([np.repeat(clips.targets[i][None], lengths[i], 0) for i in batch])
        ccc_part = np.mean([1 - _ccc(p[:, k], t[:, k]) for k in range(2)])
        expected.append(ccc_part + 0.25 * np.mean((p - t) ** 2))
    assert head.split_loss(predictions, clips) == pytest.approx(np.mean(expected), rel=1e-5)


def _ccc(x: np.ndarray, y: np.ndarray) -> float:
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_resumed_trm_run_ends_exactly_like_an_uninterrupted_one(small_store, tmp_path):
    full = train(trm("epochs=2"), small_store, tmp_path / "full", device="cpu", progress=False)
    train(trm("epochs=2"), small_store, tmp_path / "split", device="cpu", progress=False,
          stop_after=1)
    resumed = train(trm("epochs=2"), small_store, tmp_path / "split", device="cpu",
                    progress=False, resume=True)
    assert resumed.epochs_done == 2
    assert resumed.best_metric == pytest.approx(full.best_metric, abs=1e-6)
    assert resumed.final_metrics["ccc_v"] == pytest.approx(full.final_metrics["ccc_v"], abs=1e-6)


def test_a_store_without_the_text_stream_is_one_line_naming_the_extract_command(
        small_store, tmp_path, capsys):
    copy = tmp_path / "no-text.zarr"
    shutil.copytree(small_store, copy)
    open_store(str(copy), "a").delete_stream("embeddinggemma")
    with pytest.raises(UserError) as error:
        train(trm(), str(copy), tmp_path / "run", device="cpu", progress=False)
    message = str(error.value)
    assert "'embeddinggemma'" in message
    assert "affect extract --dataset cremad" in message and "--encoders embeddinggemma" in message
    assert not (tmp_path / "run" / "checkpoints").exists()

    with pytest.raises(SystemExit) as exited:
        main(["train", "--head", "trm", "--store", str(copy), "--out", str(tmp_path / "cli"),
              "--quiet"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "embeddinggemma" in err[0]


def test_carried_state_uses_the_past_and_the_original_mode_does_not():
    torch.manual_seed(0)
    config = trm().config
    model = TinyRecursiveModel(12, config)
    torch.nn.init.normal_(model.output_head.weight)  # the zero-initialised head hides the state
    x = torch.randn(2, 5, 12)
    changed = x.clone()
    changed[:, 0] = torch.randn(2, 12)  # only the first frame differs
    with torch.no_grad():
        carried, carried_changed = model(x), model(changed)
        reset, reset_changed = model(x, carry_state=False), model(changed, carry_state=False)
    assert not torch.allclose(carried[:, -1], carried_changed[:, -1])  # the past reaches t=4
    torch.testing.assert_close(reset[:, 1:], reset_changed[:, 1:])  # each frame on its own


def test_loss_is_standard_ccc_plus_a_quarter_mse_and_the_original_formula_is_selectable():
    torch.manual_seed(0)
    target = torch.randn(64, 2)
    mask = torch.ones(64, dtype=torch.bool)
    assert float(trm_loss(target, target, mask, 0.25)) == pytest.approx(0.0, abs=1e-6)
    pred = 0.5 * target + 0.1
    p, t = pred.double().numpy(), target.double().numpy()
    ccc = [2 * np.cov(p[:, k], t[:, k], bias=True)[0, 1]
           / (p[:, k].var() + t[:, k].var() + (p[:, k].mean() - t[:, k].mean()) ** 2)
           for k in range(2)]
    expected = (2 - sum(ccc)) / 2 + 0.25 * np.mean((p - t) ** 2)
    assert float(trm_loss(pred, target, mask, 0.25)) == pytest.approx(expected, rel=1e-5)
    original = float(trm_loss(pred, target, mask, 0.25, "original"))
    assert original != pytest.approx(expected, rel=1e-3)  # the extra sigma_x * sigma_y factor


def test_every_head_trains_on_what_make_extract_writes_for_its_default_dataset():
    """`make extract DATASET=<d>` runs the dataset's recipe; `make train HEAD=<h>` reads
    store/<h's default dataset>.zarr: each shipped head's streams are in that recipe."""
    from heads.registry import list_heads
    from pipelines.datasets import get_adapter

    shipped = [name for name in list_heads() if get_head(name).__module__.startswith("heads.")]
    assert "trm" in shipped
    for name in shipped:
        cls = get_head(name)
        recipe = cls().recipe()
        adapter_recipe = get_adapter(cls.default_dataset).recipe
        assert set(recipe.features) <= set(adapter_recipe.encoders), (name, recipe.features)
        assert set(recipe.labels) <= set(adapter_recipe.labels), (name, recipe.labels)


def test_train_without_store_reads_the_default_dataset_store(small_store, tmp_path, monkeypatch):
    """What `make train HEAD=trm` runs: `affect train --head trm --out runs/trm`."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(small_store, tmp_path / "store" / "cremad.zarr")
    result = CliRunner().invoke(cli, ["train", "--head", "trm", "--out", "runs/trm", "--epochs",
                                      "1", "--quiet", *(a for s in SMALL for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "runs" / "trm" / "config.json").read_text())
    # absolute, so the run names its store from any folder (issue 17, item 10)
    assert config["store"] == str(tmp_path / "store" / "cremad.zarr")


@pytest.mark.slow
def test_one_iemocap_store_serves_tpn_awm_and_trm_without_extracting_again(tmp_path):
    """Two different heads on one store: AWTPN classifies the utterances' emotions and TRM,
    configured on IEMOCAP's streams, regresses their valence/activation ratings."""
    from pipelines.synthetic.feature_stores import iemocap_like_store

    store = iemocap_like_store(tmp_path / "iemocap.zarr", 60, seconds=1.5, audio_dim=16,
                               video_dim=12)
    keys_before = stream_keys(store)
    cls = get_head("tpn_awm")
    tpn = train(cls(apply_overrides(cls.config_cls(), [
        "epochs=2", "shared_dim=32", "lr=3e-3", "batch_size=8"])), store, tmp_path / "tpn",
        device="cpu", progress=False)
    assert tpn.best_metric is not None
    regression = train(trm("epochs=4", "audio=wav2vec2-base", "video=clip-vit-b16", "text=",
                           "labels=iemocap-vad", "val_split=test"), store, tmp_path / "trm",
                       device="cpu", progress=False)
    assert regression.best_metric > 0.3
    read = [json.loads((tmp_path / run / "config.json").read_text())["streams"]
            for run in ("tpn", "trm")]
    for alias in ("wav2vec2-base", "clip-vit-b16"):
        assert read[0][alias] == read[1][alias] == keys_before[alias]
    assert stream_keys(store) == keys_before


def test_the_input_layernorm_trains_by_default_and_stays_identity_as_in_the_original():
    from dataclasses import replace

    x, target = torch.randn(2, 4, 12), torch.randn(2, 4, 2)
    for trainable in (True, False):
        torch.manual_seed(0)
        model = TinyRecursiveModel(12, replace(trm().config, input_norm_trainable=trainable))
        torch.nn.init.normal_(model.output_head.weight)
        optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        ((model(x) - target) ** 2).mean().backward()
        optimiser.step()
        at_identity = (torch.equal(model.input_norm.weight, torch.ones(12))
                       and torch.equal(model.input_norm.bias, torch.zeros(12)))
        assert at_identity is not trainable
