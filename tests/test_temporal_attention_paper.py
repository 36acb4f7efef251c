"""temporal_attention's paper profile (issue 16, items 1-5): the released RAPT-CLIP behaviour by
default, our corrections with profile=fixed.

The released formulas are written out plainly here (from the public code, mngoc3110/RAPT-CLIP
@d318d0a: utils/loss.py, trainer.py, dataloader/) and compared with the head; the released model
itself (GenerateModel without the CLIP image tower) is checked through its saved output in
tests/data/official/temporal_attention/ (see that folder's README).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from features_store import open_store
from heads.base import apply_overrides
from heads.profile import corrections, deviations
from heads.registry import get_head
from heads.temporal_attention.config import TemporalAttentionConfig
from heads.temporal_attention.head import SegmentBatches
from heads.temporal_attention.model import ldl_loss
from heads.trainer import import_run, load_run, train
from pipelines.cli import cli
from pipelines.samples import generate_sample
from pipelines.synthetic.feature_stores import raer_like_store

OFFICIAL = Path(__file__).parent / "data" / "official" / "temporal_attention"
# the fixture's sizes (the released model's, at width 16: heads 2 x 8, MLP 32)
FIXTURE_SIZES = ["heads=2", "head_dim=8", "mlp_dim=32", "temporal_layers=1", "contexts=8",
                 "adapter_reduction=4"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _head(*sets: str):
    cls = get_head("temporal_attention")
    return cls(apply_overrides(cls.config_cls(), list(sets)))


# --- 1: the released text ---------------------------------------------------------------------


def test_the_paper_profile_prompts_with_the_released_sentences_and_descriptions():
    from heads.temporal_attention.prompts import prompts_for
    from pipelines.datasets.raer import CLASSES

    config = TemporalAttentionConfig()
    prompts, descriptions = prompts_for(config.prompt_set, CLASSES)
    # models/Text.py: prompt_ensemble_5 and class_descriptor_5_only_face (first and last)
    assert prompts[0][0] == "A photo of a student with a neutral expression."
    assert prompts[4][2] == "A photo of a student with a wandering gaze and unfocused eyes."
    assert descriptions[0] == ("A student has a neutral face with relaxed mouth, open eyes, "
                               "and calm eyebrows.")
    assert [len(p) for p in prompts] == [3] * 5
    ours, _ = prompts_for("raer", CLASSES)  # our wording stays an option
    assert ours[0][0] != prompts[0][0]


# --- 2: LDL soft targets ----------------------------------------------------------------------


def _released_ldl(logits, target, learnable_text_features, num_classes, prompts, temperature):
    """utils/loss.py SemanticLDLLoss fed as trainer.py feeds it: the per-class mean of the
    (normalised) prompt features, not normalised again."""
    class_text = learnable_text_features.view(num_classes, prompts, -1).mean(dim=1)
    sim_matrix = torch.matmul(class_text, class_text.T)
    soft_targets = F.softmax(sim_matrix[target] / temperature, dim=1)
    log_probs = F.log_softmax(logits / temperature, dim=1)
    return torch.nn.KLDivLoss(reduction="batchmean")(log_probs, soft_targets)


def test_ldl_soft_targets_are_the_released_un_normalised_prompt_mean():
    generator = torch.Generator().manual_seed(0)
    prompt_features = F.normalize(torch.randn(5, 3, 32, generator=generator), dim=-1)
    logits = torch.randn(6, 5, generator=generator) / 0.07
    target = torch.tensor([0, 1, 2, 3, 4, 1])
    released = _released_ldl(logits, target, prompt_features.view(15, -1), 5, 3, 1.0)
    config = TemporalAttentionConfig()
    ours = ldl_loss(logits, target, prompt_features.mean(dim=1), config.ldl_temperature,
                    renormalise=config.ldl_targets == "renormalised")
    assert torch.allclose(ours, released, rtol=1e-6, atol=1e-6)
    fixed = apply_overrides(TemporalAttentionConfig(), ["profile=fixed"])
    renormalised = ldl_loss(logits, target, prompt_features.mean(dim=1), 1.0,
                            renormalise=fixed.ldl_targets == "renormalised")
    print(f"LDL on the toy case: released {released.item():.3f}, renormalised "
          f"{renormalised.item():.3f}")
    assert abs(renormalised.item() - released.item()) > 1e-3


# --- 5: UAR as the released trainer -----------------------------------------------------------


def _released_uar(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """trainer.py: sklearn's confusion_matrix (labels: the sorted union of both arrays), then
    nanmean(diag / (row sum + 1e-6))."""
    labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        cm[labels.index(t), labels.index(p)] += 1
    return float(np.nanmean(cm.diagonal() / (cm.sum(axis=1) + 1e-6)))


def test_score_reports_the_released_uar_beside_ours_and_selects_on_it():
    from heads.temporal_attention.head import SegmentData, SegmentSplit

    y_true = np.array([0, 0, 1, 1, 3, 3])
    y_pred = np.array([0, 2, 1, 1, 3, 4])  # 2 and 4 predicted, never true
    split = SegmentSplit("val", [f"c{i}" for i in range(6)], y_true, np.zeros((1, 6), np.int64),
                         np.zeros((1, 6), np.int64), np.ones(6, np.int64))
    data = SegmentData(face=np.zeros((1, 4)), body=np.zeros((1, 4)), splits={"val": split},
                       classes=["a", "b", "c", "d", "e"], dim=4)
    probabilities = np.eye(5)[y_pred]
    head = _head()
    metrics = head.score({"clip_ids": split.clip_ids, "probabilities": probabilities}, data, "val")
    assert metrics["UAR_paper"] == pytest.approx(_released_uar(y_true, y_pred), abs=1e-12)
    assert metrics["UAR"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    print(f"UAR {metrics['UAR']:.3f} vs the released {metrics['UAR_paper']:.3f}")
    assert metrics["UAR"] - metrics["UAR_paper"] > 0.2
    assert head.metric_name == "UAR_paper"
    assert _head("profile=fixed").metric_name == "UAR"


# --- mixup: asked for, never passed -------------------------------------------------------------


def test_the_paper_profile_trains_without_mixup_as_the_released_trainer(tmp_path):
    """main.py builds `Trainer(...)` without `mixup_alpha`, whose default is 0.0, so train.sh's
    `--mixup-alpha 0.2` never mixes; `fixed` mixes with 0.2."""
    store_path = raer_like_store(tmp_path / "s.zarr", clips=20, frames=20, dim=16, reduced=True)
    store = open_store(store_path, "r")
    for sets, mixed in (((), False), (("profile=fixed", "face_stream=clip-vit-b16@rapt@face",
                                       "body_stream=clip-vit-b16@rapt@body"), True)):
        head = _head(*sets)
        data = head.build_data(store)
        lambdas = [float(b["mix_lambda"]) for b in
                   SegmentBatches(data, head.config, np.random.default_rng(0))]
        assert all(v == 1.0 for v in lambdas) != mixed, (sets, lambdas)


# --- profiles -----------------------------------------------------------------------------------


def test_the_paper_defaults_and_the_fixed_profile_corrections():
    paper = TemporalAttentionConfig()
    assert paper.profile == "paper" and deviations(paper) == []
    assert paper.amp == "fp16" and paper.seed == 42
    assert paper.face_stream == "clip-vit-b16@rapt@face"
    fixed = apply_overrides(TemporalAttentionConfig(), ["profile=fixed"])
    assert sorted(deviations(fixed)) == sorted(corrections(TemporalAttentionConfig))
    assert set(deviations(fixed)) == {"ldl_targets=renormalised", "select_metric=UAR",
                                      "mixup_alpha=0.2",
                                      "face_stream=clip-vit-b16@face",
                                      "body_stream=clip-vit-b16@body"}


def test_a_fixed_run_records_its_corrections(tmp_path):
    store = raer_like_store(tmp_path / "s.zarr", clips=20, frames=20, dim=16, reduced=True,
                            rapt=False)
    head = _head("profile=fixed", "epochs=1", "heads=2", "head_dim=8", "mlp_dim=32")
    train(head, store, tmp_path / "run", device="cpu", progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["profile"] == "fixed"
    assert set(corrections(TemporalAttentionConfig)) <= set(config["deviations"])
    assert any(a.startswith("frozen image encoder") for a in config["approximate"])
    assert any(a.startswith("no augmentation") for a in config["approximate"])
    assert config["metric"] == "UAR"


# --- the released model -----------------------------------------------------------------------


def test_import_run_of_the_released_model_gives_its_output(tmp_path):
    """GenerateModel of the public code (its image tower a flatten: features in), state dict
    mapped by `import_run`; our paper-profile forward pass gives the released logits, through
    the same (reduced, random) CLIP text tower and the released prompt text."""
    store = raer_like_store(tmp_path / "s.zarr", clips=10, frames=20, dim=16, reduced=True)
    run = import_run(_head(*FIXTURE_SIZES), store, OFFICIAL / "model_state.pth",
                     tmp_path / "run")
    loaded = load_run(run, device="cpu")
    io = torch.load(OFFICIAL / "io.pt", weights_only=True)
    loaded.model.eval()
    with torch.no_grad():
        logits, video, _ = loaded.model(io["face"], io["body"])
    assert torch.allclose(video, io["video_features"], atol=1e-5)
    assert torch.allclose(logits, io["logits"], atol=1e-5), (logits - io["logits"]).abs().max()
    config = json.loads((run / "config.json").read_text())
    assert config["profile"] == "paper"
    assert config["deviations"] == ["heads=2", "head_dim=8", "mlp_dim=32"]  # the sizes
    ignored = config["imported"]["ignored"]
    assert "text tower" in ignored["text_encoder.positional_embedding"]
    assert "text tower" in ignored["clip_model_.transformer.resblocks.0.attn.in_proj_weight"]
    assert "checked equal" in ignored["prompt_learner.token_suffix"]


def test_a_checkpoint_of_other_prompt_text_is_refused_in_one_line(tmp_path):
    from features_store import UserError

    store = raer_like_store(tmp_path / "s.zarr", clips=10, frames=20, dim=16, reduced=True)
    with pytest.raises(UserError, match=r"prompt token embeddings .* prompt_set='raer'"):
        import_run(_head(*FIXTURE_SIZES, "prompt_set=raer"), store,
                   OFFICIAL / "model_state.pth", tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- 3: the released CLIP input ---------------------------------------------------------------


def _released_letterbox_geometry(width: int, height: int, size: int = 224):
    """dataloader/video_dataloader.py _resize_image: scaled size and padding."""
    r = min(size / width, size / height)
    new_w, new_h = int(width * r), int(height * r)
    pw, ph = (size - new_w) // 2, (size - new_h) // 2
    return new_w, new_h, pw, ph


def test_rapt_input_squashes_faces_and_letterboxes_bodies_in_unit_pixels():
    from PIL import Image

    from extract.encoders.rapt_input import RaptInput, cv2_resize_linear

    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, size=(61, 40, 3), dtype=np.uint8)
    face = RaptInput("squash")(crop[None])[0]
    # GroupResize (PIL bilinear to 224 x 224) + ToTorchFormatTensor (/255, no mean/std)
    expected = np.array(Image.fromarray(crop).resize((224, 224), Image.BILINEAR))
    assert torch.equal(face, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)

    body = RaptInput("letterbox")(crop[None])[0]
    new_w, new_h, pw, ph = _released_letterbox_geometry(40, 61)
    assert (new_w, new_h, pw, ph) == (146, 224, 39, 0)
    assert torch.all(body[:, :, :pw] == 0) and torch.all(body[:, :, pw + new_w:] == 0)
    inner = body[:, ph:ph + new_h, pw:pw + new_w]
    assert torch.all(inner.amax(dim=(0, 1)) > 0)
    # cv2.resize INTER_LINEAR: half-pixel bilinear without antialiasing, 8-bit fixed point
    reference = F.interpolate(torch.from_numpy(crop).permute(2, 0, 1)[None].double(),
                              size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    assert (inner * 255 - reference).abs().max() <= 1.0
    scaled = cv2_resize_linear(crop[:60], 20, 30)  # a plain 2x reduction averages 2x2 blocks
    blocks = crop[:60].reshape(30, 2, 20, 2, 3).astype(int).sum(axis=(1, 3))
    assert np.array_equal(scaled, ((blocks + 2) >> 2).astype(np.uint8))


def test_the_rapt_preprocessing_is_an_option_in_the_stream_key_and_the_raer_default():
    from extract.encoders import create_encoder
    from extract.encoders.rapt_input import RaptInput
    from extract.plan import parse_request, request_options, stream_info
    from pipelines.datasets.raer import RaerAdapter

    rapt = create_encoder("clip-vit-b16", weights="random", reduced=True, preprocess="rapt")
    plain = create_encoder("clip-vit-b16", weights="random", reduced=True)
    assert rapt.alias == "clip-vit-b16@rapt@random@reduced"
    assert rapt.preprocessor_for("face") == RaptInput("squash")
    assert rapt.preprocessor_for("body") == RaptInput("letterbox")
    keys = {stream_info(e, "face", 25.0, "float16").with_key().key for e in (rapt, plain)}
    assert len(keys) == 2
    assert parse_request("clip-vit-b16@rapt@face") == ("clip-vit-b16", "face")
    assert request_options("clip-vit-b16@rapt@face") == {"preprocess": "rapt"}
    assert RaerAdapter.recipe.encoders == ["clip-vit-b16@rapt@face", "clip-vit-b16@rapt@body"]


# --- 4: augmented views -----------------------------------------------------------------------


def test_views_are_extracted_as_streams_and_training_draws_them(tmp_path):
    data = tmp_path / "raer"
    generate_sample("raer", data, clips=10, seconds=1, seed=0, size=32)
    store_path = tmp_path / "raer.zarr"
    result = CliRunner().invoke(cli, [
        "extract", "--dataset", "raer", "--data-root", str(data), "--store", str(store_path),
        "--weights", "random", "--reduced", "--device", "cpu", "--fps", "5",
        "--views", "hflip,rot-4,rot+4"])
    assert result.exit_code == 0, result.output
    shutil.rmtree(data)
    store = open_store(str(store_path), "r")
    plain = store.resolve("clip-vit-b16@rapt@face")
    views = {s.preprocessing["view"]: s for s in store.streams()
             if (s.extra or {}).get("view_of") == plain.key}
    assert set(views) == {"hflip", "rot-4", "rot+4"}
    assert views["hflip"].alias == plain.alias + "~hflip"
    clip_id = sorted(store.committed_clip_ids(plain))[0]
    base = store.load_stream(plain, [clip_id]).clip(clip_id)
    flipped = store.load_stream(views["hflip"], [clip_id]).clip(clip_id)
    assert base.shape == flipped.shape and not np.array_equal(base, flipped)

    head = _head("epochs=1")
    loaded = head.build_data(store)
    assert loaded.face_views == ["hflip", "rot+4", "rot-4"] == loaded.body_views
    train_split = loaded.split("train")
    assert train_split.face_rows.shape == (4, len(train_split))
    plain_rows = {row.tobytes() for row in loaded.face[:_plain_rows(store, plain)]}
    drawn, rng = set(), np.random.default_rng(0)
    for _ in range(4):  # epochs: each clip gets one of 4 streams per epoch
        for batch in SegmentBatches(loaded, head.config, rng):
            drawn |= {row.astype(np.float16).tobytes() in plain_rows
                      for row in batch["face"].numpy().reshape(-1, loaded.dim)}
    assert drawn == {True, False}  # plain rows and view rows both drawn
    run = tmp_path / "run"
    train(head, str(store_path), run, device="cpu", progress=False)
    approximate = json.loads((run / "config.json").read_text())["approximate"]
    assert any("cached views hflip, rot+4, rot-4" in a for a in approximate), approximate
    assert not any(a.startswith("no augmentation") for a in approximate)


def test_a_view_that_lacks_clips_is_refused_rather_than_shrinking_the_training_set(tmp_path):
    import dataclasses

    from features_store import StreamInfo, UserError

    store = open_store(raer_like_store(tmp_path / "s.zarr", clips=10, frames=20, dim=16,
                                       reduced=True), "a")
    plain = store.resolve("clip-vit-b16@rapt@face")
    fields = {f.name: getattr(plain, f.name) for f in dataclasses.fields(StreamInfo)
              if f.name not in ("key", "created")}
    view = store.create_stream(StreamInfo(**{
        **fields, "alias": plain.alias + "~hflip",
        "preprocessing": {**plain.preprocessing, "view": "hflip"},
        "extra": {**plain.extra, "view_of": plain.key}}))
    first = sorted(store.committed_clip_ids(plain))[0]
    with store.part_writer(view, "p0") as writer:
        writer.write_clip(first, np.zeros((20, 16), np.float32))
    with pytest.raises(UserError, match=r"view stream .*~hflip lacks 9 of the 10 clips"):
        _head().build_data(store)
    assert _head("views=none").build_data(store).face_views == []


def _plain_rows(store, info) -> int:
    ids = sorted(store.committed_clip_ids(info))
    return int(store.load_stream(info, ids).lengths.sum())
