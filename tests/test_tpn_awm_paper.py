"""AWTPN as its authors released it: the paper profile, the released weights, a validation set
that is never the test split.

A researcher holding the released AWTPN weights imports them into a run and gets the released
module's outputs; a default run trains as the released code does (original inter-modal sign,
`randperm` negatives, no padding mask), and `profile=fixed` lists the three corrections. On
IEMOCAP, whose protocol has no validation split, the checkpoint is chosen on training speakers
held out by a fixed rule, never on session 5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from features_store import StreamInfo, open_store
from heads.base import apply_overrides
from heads.registry import get_head
from heads.tpn_awm.head import ShuffledBatches, carve_validation, negative_partners
from heads.tpn_awm.model import awtpn_losses
from heads.trainer import import_run, load_run, read_run_config, train

FIXTURE = Path(__file__).parent / "data/official/tpn_awm"
CLASSES = ["hap", "sad", "neu", "ang", "exc", "fru"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _iemocap_store(path: Path, test_audio: np.ndarray, test_video: np.ndarray,
                   test_labels: np.ndarray, train_per_speaker: int = 3) -> str:
    """An IEMOCAP-shaped store: eight training speakers (Ses01-04, F and M) with random
    utterances and the fixture's utterances as session 5 (the test split)."""
    rng = np.random.default_rng(0)
    store = open_store(str(path), mode="a", dataset="iemocap")
    audio = store.create_stream(StreamInfo(name="wav2vec2-base", dim=test_audio.shape[-1],
                                           frame_shift_s=0.02))
    video = store.create_stream(StreamInfo(name="clip-vit-b16", dim=test_video.shape[-1],
                                           frame_shift_s=0.5))
    labels = store.create_stream(StreamInfo(name="iemocap-emotion", kind="label", dim=1,
                                            extra={"classes": CLASSES}))
    clips = []
    with store.part_writer(audio, "p0") as wa, store.part_writer(video, "p0") as wv, \
            store.part_writer(labels, "p0") as wl:
        for session in range(1, 5):
            for sex in "FM":
                for k in range(train_per_speaker):
                    clip = f"Ses{session:02d}{sex}_{k}"
                    n = int(rng.integers(4, 9))
                    wa.write_clip(clip, rng.normal(size=(n, test_audio.shape[-1])))
                    wv.write_clip(clip, rng.normal(size=(n, test_video.shape[-1])))
                    wl.write_clip(clip, np.array([[k % len(CLASSES)]], np.float32))
                    clips.append({"clip_id": clip, "split": "train",
                                  "speaker": f"Ses{session:02d}_{sex}"})
        for i, (a, v, y) in enumerate(zip(test_audio, test_video, test_labels)):
            clip = f"Ses05F_{i}"
            wa.write_clip(clip, a)
            wv.write_clip(clip, v)
            wl.write_clip(clip, np.array([[y]], np.float32))
            clips.append({"clip_id": clip, "split": "test", "speaker": "Ses05_F"})
    store.add_clips(clips)
    store.finalize()
    return str(path)


@pytest.fixture(scope="module")
def released():
    return load_file(FIXTURE / "io.safetensors")


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory, released) -> str:
    return _iemocap_store(tmp_path_factory.mktemp("awtpn") / "iemocap.zarr",
                          released["audio"].numpy(), released["video"].numpy(),
                          released["labels"].numpy())


def _head(*sets: str):
    cls = get_head("tpn_awm")
    return cls(apply_overrides(cls.config_cls(), list(sets)))


def test_the_released_weights_give_the_released_outputs(fixture_store, released, tmp_path):
    run = import_run(_head("shared_dim=8"), fixture_store, FIXTURE / "awtpn.safetensors",
                     tmp_path / "imported")
    saved = read_run_config(run)
    assert saved["profile"] == "paper" and saved["deviations"] == ["shared_dim=8"]
    assert saved["imported"]["ignored"] == {}
    loaded = load_run(run, device="cpu")
    data = loaded.head.predict_data(loaded.data, loaded.store, "test")
    with torch.no_grad():
        predictions = loaded.head.predict(loaded.model, data, "test")
    order = [int(k.rsplit("_", 1)[1]) for k in predictions["clip_ids"]]
    official = released["logits"].softmax(-1).numpy()[order]
    assert np.abs(predictions["probabilities"] - official).max() < 1e-5
    # the released training loss, with the released randperm negatives
    part = data.split("test")
    batch = part.batch(np.argsort(order))  # fixture order
    mask = torch.ones_like(batch["audio_mask"])
    with torch.no_grad():
        out = loaded.model(batch["audio"], mask, batch["video"], mask)
    parts = awtpn_losses(out, batch["label"], mask, mask, released["perm_inter"],
                         released["perm_contrast"], inter_margin=1.0, contrast_margin=1.0,
                         inter_sign="original")
    c = loaded.head.config
    loss = (c.w_align * parts["align"] + c.w_intra * parts["intra"] + c.w_inter * parts["inter"]
            + c.w_contrast * parts["contrast"] + c.w_ce * parts["ce"] + c.w_mse * parts["mse"])
    assert abs(float(loss) - float(released["loss"])) < 1e-5


def _released_losses(a_proj, v_proj, logits, targets, perm_inter, perm_contrast):
    """The released utils/losses.py terms, written out plainly (fixed-length, unmasked)."""
    a_mean, v_mean = a_proj.mean(1), v_proj.mean(1)
    cos_pos = F.cosine_similarity(a_mean, v_mean, dim=-1)
    inter = F.relu(1.0 + cos_pos - F.cosine_similarity(a_mean, v_mean[perm_inter], dim=-1))
    d = (a_mean - v_mean).pow(2).sum(-1).sqrt().mean()
    d_neg = (a_mean - v_mean[perm_contrast]).pow(2).sum(-1).sqrt()
    onehot = F.one_hot(targets, logits.shape[-1]).float()
    return {"intra": (1 - cos_pos).mean(), "inter": inter.mean(),
            "contrast": d + F.relu(1.0 - d_neg).mean(), "ce": F.cross_entropy(logits, targets),
            "mse": (logits.softmax(-1) - onehot).pow(2).mean()}


def test_the_paper_profile_averages_over_padding_and_may_draw_itself_as_negative():
    head = _head()
    c = head.config
    assert (c.inter_sign, c.negatives, c.padding_mask) == ("original", "randperm", False)
    fixed = _head("profile=fixed").config
    assert (fixed.inter_sign, fixed.negatives, fixed.padding_mask) == \
        ("correct", "derangement", True)
    # randperm keeps fixed points (an utterance its own negative); a derangement never does
    rng = np.random.default_rng(0)
    draws = [negative_partners(rng, 8, "randperm") for _ in range(200)]
    assert any(np.any(d == np.arange(8)) for d in draws)
    assert all(np.all(negative_partners(rng, 8, "derangement") != np.arange(8))
               for _ in range(200))
    # no padding mask: a padded utterance's mean counts the zero padding, as the released code
    batch = {"audio_mask": torch.tensor([[True, True, False]]),
             "video_mask": torch.tensor([[True, False, False]])}
    audio_mask, video_mask = head._masks(batch)
    assert audio_mask.all() and video_mask.all()
    torch.manual_seed(0)
    a, v = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    a[0, 2:] = 0.0
    logits = torch.randn(2, 6)
    target = torch.tensor([1, 4])
    ones = torch.ones(2, 3, dtype=torch.bool)
    perm = torch.tensor([0, 1])  # randperm's identity: each its own negative
    out = {"logits": logits, "a": a, "v": v, "d_a": torch.zeros(2, 3, 6),
           "d_v": torch.zeros(2, 3, 6)}
    ours = awtpn_losses(out, target, ones, ones, perm, perm, inter_margin=1.0,
                        contrast_margin=1.0, inter_sign=c.inter_sign)
    plain = _released_losses(a, v, logits, target, perm, perm)
    for name, value in plain.items():
        assert abs(float(ours[name]) - float(value)) < 1e-6, name


def test_iemocap_selects_on_held_out_training_speakers_never_on_session_5(tmp_path):
    rng = np.random.default_rng(1)
    store = _iemocap_store(tmp_path / "iemocap.zarr", rng.normal(size=(4, 5, 12)),
                           rng.normal(size=(4, 5, 10)), np.array([0, 1, 2, 3]))
    run = tmp_path / "run"
    train(_head("epochs=1", "shared_dim=8"), store, run, device="cpu", progress=False)
    # the rule: max(1, round(0.1 * 8)) of the sorted speakers, by np.random.RandomState(0)
    clips = open_store(store, "r").clips()
    speakers = sorted({c["speaker"] for c in clips if c["split"] == "train"})
    expected = speakers[np.random.RandomState(0).permutation(8)[0]]
    assert carve_validation(clips, 0.1, 0, "s", "val") == (f"speaker:{expected}",)
    config = read_run_config(run)["config"]
    assert config["val_split"] == "val" and config["val_carved"] == [f"speaker:{expected}"]
    data = load_run(run, device="cpu").data
    val, train_ids, test = (set(data.split(s).clip_ids) for s in ("val", "train", "test"))
    held = expected.replace("_", "")
    assert val == {f"{held}_0", f"{held}_1", f"{held}_2"}
    assert not val & test and not val & train_ids and not train_ids & test
    assert all(k.startswith("Ses05") for k in test)
    assert len(carve_validation(clips, 0.25, 3, "s", "val")) == 2


def test_shuffled_batches_draw_the_profile_s_negatives():
    class Split:
        def __len__(self):
            return 8

        def batch(self, items):
            return {}

    rng = np.random.default_rng(0)
    batches = list(ShuffledBatches(Split(), 8, rng, "derangement"))
    assert np.all(batches[0]["inter_negative"].numpy() != np.arange(8))
