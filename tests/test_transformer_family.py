"""The transformer-LSTM family on a synthetic Aff-Wild2-like store.

Story: an Aff-Wild2 style dataset (per-frame valence/arousal text files, -5 for invalid frames)
is ingested into a store together with two feature streams at different rates (a 30 Hz "face"
stream and a 50 Hz "audio" stream that encode valence/arousal linearly plus noise). The dataset
folder is then deleted: each family member trains from the store alone and reaches CCC > 0.8 on
the validation videos, predictions are smoothed and written in the ABAW challenge format, and
two runs ensemble into one set of files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from features_store import StreamInfo, UserError, open_store
from heads.base import apply_overrides
from heads.registry import get_head
from heads.trainer import load_run, predict_model, train
from heads.transformer_family.export import (
    ensemble_mean,
    read_challenge_file,
    write_challenge_files,
)
from heads.transformer_family.head import plan_chunks
from heads.transformer_family.smoothing import moving_average, smooth_va

FPS = 30
FACE_DIM, AUDIO_DIM = 12, 6
FAMILY = ["transformer", "transformer-lstm", "transformer-attention", "fclstm-xl"]

# Small models that train in seconds on a CPU core; everything else keeps the paper's defaults
# (the paper profile: raw features and N(0, 0.02) weights need a third epoch on this toy).
SMALL = ["features=face,audio", "d_model=32", "n_layers=1", "n_heads=4", "ffn=64",
         "lstm_hidden=32", "regressor_hidden=32", "dropout=0.0", "input_dropout=0.0",
         "regressor_dropout=0.0", "lr=3e-3", "epochs=3", "constant_epochs=3", "chunk=100",
         "batch_size=4"]


def write_affwild2_labels(root: Path, n_videos: int, rng: np.random.Generator) -> None:
    """Label files as Aff-Wild2 ships them: header, then `valence,arousal` per frame."""
    for k in range(n_videos):
        split_dir = "Train_Set" if k < n_videos - 4 else "Validation_Set"
        n = int(rng.integers(250, 450))
        t = np.arange(n) / FPS
        freq, phase = rng.uniform(0.05, 0.25, 2), rng.uniform(0, 2 * np.pi, 2)
        va = 0.8 * np.sin(2 * np.pi * t[:, None] * freq + phase)
        va[rng.random(n) < 0.05] = -5.0  # invalid frames
        folder = root / "VA_Estimation_Challenge" / split_dir
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["valence,arousal", *(f"{v:.4f},{a:.4f}" for v, a in va)]
        (folder / f"video{k:02d}.txt").write_text("\n".join(lines) + "\n")


def ingest(root: Path, store_path: Path, rng: np.random.Generator) -> None:
    """Labels from the files, features that encode the (clean) labels linearly plus noise."""
    store = open_store(str(store_path), mode="a", dataset="affwild2")
    face = store.create_stream(StreamInfo(name="face", dim=FACE_DIM, frame_shift_s=1 / FPS))
    audio = store.create_stream(StreamInfo(name="audio", dim=AUDIO_DIM, frame_shift_s=0.02))
    labels = store.create_stream(StreamInfo(name="affwild2-va", kind="label", dim=2,
                                            frame_shift_s=1 / FPS))
    to_face, to_audio = rng.normal(size=(2, FACE_DIM)), rng.normal(size=(2, AUDIO_DIM))
    clips = []
    with (store.part_writer(face, "p0") as face_w, store.part_writer(audio, "p0") as audio_w,
          store.part_writer(labels, "p0") as label_w):
        for path in sorted(root.glob("VA_Estimation_Challenge/*/*.txt")):
            va = read_challenge_file(path)
            clean = va.copy()
            bad = np.any(va == -5.0, axis=1)
            # the features see the underlying signal, also on frames whose label is invalid
            good = np.flatnonzero(~bad)
            for c in range(2):
                clean[bad, c] = np.interp(np.flatnonzero(bad), good, va[good, c])
            t = np.arange(len(va)) / FPS
            t_audio = np.arange(int(len(va) / FPS / 0.02)) * 0.02
            audio_va = np.stack([np.interp(t_audio, t, clean[:, c]) for c in range(2)], 1)
            clip_id = path.stem
            face_w.write_clip(clip_id, clean @ to_face + 0.3 * rng.normal(size=(len(va), FACE_DIM)))
            audio_w.write_clip(clip_id, audio_va @ to_audio
                               + 0.3 * rng.normal(size=(len(t_audio), AUDIO_DIM)))
            label_w.write_clip(clip_id, va)
            split = "train" if path.parent.name == "Train_Set" else "val"
            clips.append({"clip_id": clip_id, "split": split, "duration": len(va) / FPS})
    store.add_clips(clips)
    store.finalize()


@pytest.fixture(scope="module")
def va_store(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("affwild2")
    rng = np.random.default_rng(7)
    raw = base / "raw"
    write_affwild2_labels(raw, n_videos=14, rng=rng)
    store = base / "affwild2.zarr"
    ingest(raw, store, rng)
    for path in sorted(raw.rglob("*"), reverse=True):  # heads must not need the dataset
        path.unlink() if path.is_file() else path.rmdir()
    return store


def small_head(name: str, *extra: str):
    cls = get_head(name)
    return cls(apply_overrides(cls.config_cls(), [*SMALL, *extra]))


@pytest.fixture(scope="module")
def trained_runs(va_store, tmp_path_factory) -> dict[str, Path]:
    """Each family member trained briefly; opened files recorded by an audit hook."""
    runs_dir = tmp_path_factory.mktemp("runs")
    opened: list[str] = []
    recording = [True]

    def hook(event: str, args: tuple) -> None:
        if recording[0] and event == "open" and isinstance(args[0], str | bytes | Path):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    runs = {}
    try:
        for name in FAMILY:
            run = runs_dir / name
            train(small_head(name), va_store, run, device="cpu", progress=False)
            runs[name] = run
    finally:
        recording[0] = False
    outside = [p for p in opened if p.startswith(str(va_store.parent))
               and not p.startswith((str(va_store), str(runs_dir)))]
    runs["_outside_reads"] = outside
    return runs


@pytest.mark.parametrize("name", FAMILY)
def test_each_family_member_learns_valence_and_arousal(trained_runs, name):
    run = load_run(trained_runs[name], device="cpu")
    metrics = run.head.evaluate(run.model, run.data, "val")
    assert metrics["ccc_mean"] > 0.8, metrics
    assert metrics["ccc_v"] > 0.7 and metrics["ccc_a"] > 0.7, metrics


def test_training_reads_nothing_but_the_store(trained_runs):
    # the dataset folder was deleted before training; nothing else next to the store was opened
    assert trained_runs["_outside_reads"] == []
    code = ("import sys, heads.registry, heads.trainer, heads.transformer_family; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('extract', 'pipelines')]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_invalid_frames_are_masked_in_the_loss_and_metric(trained_runs):
    run = load_run(trained_runs["fclstm-xl"], device="cpu")
    seqs = run.data.sequences("val")
    assert 0 < (~seqs.mask).sum() < 0.2 * len(seqs.mask)
    assert np.all(seqs.labels[~seqs.mask] == -5.0)
    assert np.all(np.abs(seqs.labels[seqs.mask]) <= 1.0)


def test_the_lstm_state_is_carried_across_chunks(trained_runs):
    """fclstm-xl has nothing chunk-local: 100-frame chunks with carried state must give the same
    predictions as one chunk per video, and a slot's state must not leak into its next video."""
    run = load_run(trained_runs["fclstm-xl"], device="cpu")
    chunked = predict_model(run.head, run.model, run.data, "val")
    run.head.config = apply_overrides(run.head.config, ["chunk=1000", "batch_size=1"])
    whole = predict_model(run.head, run.model, run.data, "val")
    for clip_id, pred in whole.items():
        np.testing.assert_allclose(chunked[clip_id], pred, atol=1e-4)


def test_plan_chunks_covers_every_frame_once_and_resets_per_video():
    lengths = np.array([250, 30, 120, 0, 101])
    clips, starts = plan_chunks(lengths, np.array([2, 0, 1, 3, 4]), n_slots=2, chunk=50)
    covered = {c: np.zeros(n, int) for c, n in enumerate(lengths)}
    for step in range(len(clips)):
        for clip, start in zip(clips[step], starts[step]):
            if clip >= 0:
                covered[clip][start : start + 50] += 1
    assert all(np.all(v == 1) for v in covered.values())
    # in each slot, a video's chunks are consecutive and in order
    for slot in range(2):
        seen = [(c, s) for c, s in zip(clips[:, slot], starts[:, slot]) if c >= 0]
        for (c0, s0), (c1, s1) in zip(seen, seen[1:]):
            assert (c1 == c0 and s1 == s0 + 50) or (c1 != c0 and s1 == 0)


def test_smoothing_averages_with_shrinking_windows_then_clips():
    x = np.array([0.0, 3.0, 0.0, 3.0, 0.0])
    np.testing.assert_allclose(moving_average(x, 1), [1.5, 1.0, 2.0, 1.0, 1.5])
    np.testing.assert_allclose(moving_average(x, 0), x)
    pred = np.array([[2.0, -2.0], [0.0, 0.0], [-0.5, 0.5]])
    # official order (test.py: smooth_prediction, then process_preds): raw mean, then clip
    out = smooth_va(pred, (1, 0))
    np.testing.assert_allclose(out[:, 1], [-1.0, 0.0, 0.5])  # clipped, not smoothed
    np.testing.assert_allclose(out[:, 0], [1.0, 0.5, -0.25])  # (2+0)/2, (2+0-0.5)/3, -0.5/2
    # our variant: clip first, then average
    out = smooth_va(pred, (1, 0), order="clip-then-smooth")
    np.testing.assert_allclose(out[:, 0], [0.5, 1 / 6, -0.25])


def test_export_post_processes_smooth_then_clip_by_default(tmp_path):
    pred = {"vid": np.array([[2.0, -2.0], [0.0, 0.0], [-0.5, 0.5]])}
    head = small_head("transformer", "smooth_half_widths=1,0")
    head.export(pred, None, "test", tmp_path / "official")
    np.testing.assert_allclose(read_challenge_file(tmp_path / "official" / "vid.txt")[:, 0],
                               [1.0, 0.5, -0.25], atol=1e-6)
    ours = small_head("transformer", "smooth_half_widths=1,0", "postprocess=clip-then-smooth")
    ours.export(pred, None, "test", tmp_path / "ours")
    np.testing.assert_allclose(read_challenge_file(tmp_path / "ours" / "vid.txt")[:, 0],
                               [0.5, 1 / 6, -0.25], atol=1e-6)


def test_an_ensemble_averages_each_runs_post_processed_outputs(tmp_path):
    # Two runs that overshoot in opposite directions: averaging the raw outputs would cancel
    # the overshoot before clipping; the official get_preds.py averages clipped, smoothed runs.
    a = {"vid": np.array([[3.0, 0.2], [3.0, 0.2], [3.0, 0.2]])}
    b = {"vid": np.array([[-1.0, 0.4], [-1.0, 0.4], [-1.0, 0.4]])}
    head = small_head("transformer", "smooth_half_widths=1,1")
    combined = head.ensemble([a, b])
    want = (head.postprocess(a["vid"]) + head.postprocess(b["vid"])) / 2
    np.testing.assert_allclose(combined["vid"], want)
    np.testing.assert_allclose(combined["vid"][:, 0], 0.0)  # (1 + -1) / 2, not clip(1) = 1
    head.export(combined, None, "test", tmp_path / "ens")  # written as is: not smoothed twice
    np.testing.assert_allclose(read_challenge_file(tmp_path / "ens" / "vid.txt"), want,
                               atol=1e-6)
    raw = small_head("transformer", "smooth_half_widths=1,1", "ensemble_of=raw")
    raw.export(raw.ensemble([a, b]), None, "test", tmp_path / "raw")
    np.testing.assert_allclose(read_challenge_file(tmp_path / "raw" / "vid.txt")[:, 0], 1.0)


def _layers(module: torch.nn.Module) -> list[tuple]:
    """(type, shape-or-rate) of each layer of a Sequential."""
    out = []
    for m in module:
        if isinstance(m, torch.nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, torch.nn.Dropout):
            out.append(("Dropout", m.p))
        else:
            out.append((type(m).__name__,))
    return out


def _paper_model(name: str, *sets: str, dim: int = 40):
    cls = get_head(name)
    head = cls(apply_overrides(cls.config_cls(), list(sets)))
    return head.build_model(type("D", (), {"dim": dim})())


@pytest.mark.parametrize("name", ["transformer", "transformer-lstm", "transformer-attention"])
def test_the_transformer_scripts_regressor_has_two_hidden_layers(name):
    # scripts/train_transformer*.sh: --regress_layers=256,256 --dropout_rate=0.3
    assert _layers(_paper_model(name).head) == [
        ("Linear", 256, 256), ("ReLU",), ("Dropout", 0.3),
        ("Linear", 256, 256), ("ReLU",), ("Dropout", 0.3), ("Linear", 256, 2)]
    assert _layers(_paper_model("fclstm-xl").head) == [
        ("Linear", 512, 512), ("ReLU",), ("Dropout", 0.3),
        ("Linear", 512, 256), ("ReLU",), ("Dropout", 0.3), ("Linear", 256, 2)]


def test_transformer_lstm_input_is_the_official_fc_encoder_and_the_residual_adds_it():
    model = _paper_model("transformer-lstm")
    assert _layers(model.project) == [("Linear", 40, 256), ("ReLU",), ("Dropout", 0.1)]
    assert _layers(_paper_model("transformer-lstm", "input_relu=false").project) == [
        ("Linear", 40, 256), ("Dropout", 0.1)]
    # the LSTM receives FcEncoder output + encoder output
    model.eval()
    seen = {}
    model.project.register_forward_hook(lambda m, i, o: seen.update(fc=o))
    model.encoder.register_forward_hook(lambda m, i, o: seen.update(enc=o))
    model.lstm.register_forward_hook(lambda m, i, o: seen.update(lstm_in=i[0]))
    x = torch.randn(2, 30, 40)
    model(x, torch.ones(2, 30, dtype=torch.bool))
    assert (seen["fc"] >= 0).all()  # after the ReLU
    torch.testing.assert_close(seen["lstm_in"], seen["enc"] + seen["fc"])


def test_transformer_attention_adds_attention_plainly_and_skips_it_on_a_first_chunk():
    model = _paper_model("transformer-attention", "chunk=30")
    names = [n for n, _ in model.named_parameters()]
    assert not any("norm" in n and n.startswith("norm") for n in names)
    assert "null_slot" not in names
    assert model.attention.dropout == 0.0
    model.eval()
    x = torch.randn(2, 30, 40)
    present = torch.ones(2, 30, dtype=torch.bool)
    with torch.no_grad():
        h = model.encoder(model.positions(model.project(x)))
        first, state = model(x, present)
        # the first chunk of a video has no memory: the regressor sees the encoder output
        torch.testing.assert_close(first, model.head(h))
        second, _ = model(x, present, state)
        memory = state[0][:, -3:]  # the valid slots: 30 frames pooled every 10
        attended, _ = model.attention(h, memory, memory, need_weights=False)
        torch.testing.assert_close(second, model.head(h + attended))
    assert state[1].sum(1).tolist() == [3, 3]  # 30 frames pooled every 10 -> 3 slots
    ours = _paper_model("transformer-attention", "memory_attention=normed-null-slot")
    assert {"null_slot", "norm.weight"} <= {n for n, _ in ours.named_parameters()}


def test_each_target_is_predicted_from_its_own_best_epoch(tmp_path):
    head = small_head("transformer-lstm")
    data_like = type("D", (), {"dim": 8})()
    model_a, model_b = head.build_model(data_like), head.build_model(data_like)
    # validation after epoch 1 and 2: valence peaks at epoch 1, arousal at epoch 2
    head.on_evaluated(model_a, {"ccc_v": 0.6, "ccc_a": 0.2}, tmp_path, 1)
    head.on_evaluated(model_b, {"ccc_v": 0.5, "ccc_a": 0.3}, tmp_path, 2)
    assert json.loads((tmp_path / "best-targets.json").read_text()) == {
        "valence": {"epoch": 1, "ccc": 0.6}, "arousal": {"epoch": 2, "ccc": 0.3}}
    assert torch.load(tmp_path / "best-valence.pt", weights_only=True)["epoch"] == 1
    assert torch.load(tmp_path / "best-arousal.pt", weights_only=True)["epoch"] == 2
    # a resumed run remembers the bests: an equal score later does not replace them
    again = small_head("transformer-lstm")
    again.load_extra_state(head.extra_state())
    again.on_evaluated(model_b, {"ccc_v": 0.6, "ccc_a": 0.3}, tmp_path, 3)
    assert torch.load(tmp_path / "best-valence.pt", weights_only=True)["epoch"] == 1


def test_a_loaded_run_predicts_valence_and_arousal_from_their_own_checkpoints(trained_runs):
    run_dir = trained_runs["transformer-lstm"]
    ckpt = run_dir / "checkpoints"
    assert (ckpt / "best-valence.pt").exists() and (ckpt / "best-arousal.pt").exists()
    run = load_run(run_dir, device="cpu")
    combined = predict_model(run.head, run.model, run.data, "val")
    plain = get_head("transformer-lstm")(run.head.config)  # no per-target states loaded
    by_target = {}
    for target in ("valence", "arousal"):
        run.model.load_state_dict(torch.load(ckpt / f"best-{target}.pt",
                                             weights_only=True)["model"])
        by_target[target] = predict_model(plain, run.model, run.data, "val")
    for clip_id, pred in combined.items():
        np.testing.assert_allclose(pred[:, 0], by_target["valence"][clip_id][:, 0], atol=1e-6)
        np.testing.assert_allclose(pred[:, 1], by_target["arousal"][clip_id][:, 1], atol=1e-6)


def test_challenge_files_and_ensembles(tmp_path):
    rng = np.random.default_rng(0)
    a = {"vid_left": rng.uniform(-1, 1, (5, 2)), "sub/vid2": rng.uniform(-1, 1, (3, 2))}
    b = {k: v + 0.5 for k, v in a.items()}
    files = write_challenge_files(ensemble_mean([a, b]), tmp_path)
    assert sorted(f.name for f in files) == ["vid2.txt", "vid_left.txt"]
    lines = (tmp_path / "vid_left.txt").read_text().splitlines()
    assert lines[0] == "valence,arousal" and len(lines) == 6
    np.testing.assert_allclose(read_challenge_file(tmp_path / "vid_left.txt"),
                               a["vid_left"] + 0.25, atol=1e-6)
    with pytest.raises(UserError, match="different clips"):
        ensemble_mean([a, {"vid_left": a["vid_left"]}])
    with pytest.raises(UserError, match="both be written"):
        write_challenge_files({"x/v": np.zeros((2, 2)), "y/v": np.zeros((2, 2))}, tmp_path)


def test_cli_predicts_and_ensembles_into_challenge_files(trained_runs, va_store, tmp_path):
    from pipelines.cli.heads import ensemble, evaluate, predict

    runner = CliRunner()
    result = runner.invoke(predict, ["--run", str(trained_runs["transformer-lstm"]), "--split",
                                     "val", "--export", str(tmp_path / "pred"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    seqs = load_run(trained_runs["transformer-lstm"], device="cpu").data.sequences("val")
    for clip_id, n in zip(seqs.clip_ids, seqs.lengths):
        values = read_challenge_file(tmp_path / "pred" / f"{clip_id}.txt")
        assert values.shape == (n, 2) and np.all(np.abs(values) <= 1.0)

    runs = f"{trained_runs['transformer-lstm']},{trained_runs['fclstm-xl']}"
    result = runner.invoke(ensemble, ["--runs", runs, "--split", "val", "--export",
                                      str(tmp_path / "ens"), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert "ccc_mean" in result.output
    assert len(list((tmp_path / "ens").glob("*.txt"))) == len(seqs.clip_ids)

    result = runner.invoke(evaluate, ["--run", str(trained_runs["transformer"]), "--json"])
    assert result.exit_code == 0 and '"ccc_mean"' in result.output


def test_the_default_config_is_the_papers():
    lstm = get_head("transformer-lstm").config_cls()
    assert (lstm.chunk, lstm.batch_size, lstm.lr, lstm.betas[0], lstm.grad_clip) == (
        250, 16, 2e-5, 0.5, 5.0)
    assert (lstm.epochs, lstm.constant_epochs, lstm.schedule) == (30, 10, "linear")
    assert (lstm.d_model, lstm.n_layers, lstm.n_heads, lstm.ffn) == (256, 4, 4, 1024)
    xl = get_head("fclstm-xl").config_cls()
    assert (xl.chunk, xl.lstm_hidden, xl.regressor_hidden, xl.lr) == (100, 512, (512, 256), 3e-5)
    assert (xl.constant_epochs, xl.epochs) == (3, 30)
    model = get_head("transformer-attention")().build_model(type("D", (), {"dim": 8})())
    assert isinstance(model(torch.zeros(2, 250, 8), torch.ones(2, 250, dtype=torch.bool))[0],
                      torch.Tensor)


@pytest.mark.parametrize("name", FAMILY)
def test_models_run_under_bf16_autocast_with_an_empty_slot(name):
    """What AMP on a GPU does, checked with CPU autocast: finite loss and gradients, also for a
    batch slot with no video (all padding) and a video ending inside the chunk."""
    head = small_head(name, "chunk=40")
    model = head.build_model(type("Data", (), {"dim": 8})())
    x = torch.randn(3, 40, 8)
    present = torch.ones(3, 40, dtype=torch.bool)
    present[1, 30:] = False
    present[2] = False
    batch = {"x": x, "y": torch.rand(3, 40, 2) * 2 - 1, "mask": present, "present": present,
             "reset": torch.tensor([True, True, False])}
    for _ in range(2):  # the second chunk runs on the carried state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = head.training_step(model, batch)
        loss.backward()
        batch["reset"] = torch.zeros(3, dtype=torch.bool)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_evaluate_names_the_checkpoint_each_target_came_from(trained_runs):
    # valence from best-valence.pt (its own best epoch), arousal from best-arousal.pt: the
    # printed epoch of best.pt alone attributed valence's number to the wrong epoch.
    from pipelines.cli.heads import evaluate

    run_dir = trained_runs["transformer-lstm"]
    epochs = {t: torch.load(run_dir / "checkpoints" / f"best-{t}.pt", weights_only=True)["epoch"]
              for t in ("valence", "arousal")}
    result = CliRunner().invoke(evaluate, ["--run", str(run_dir), "--split", "val", "--device",
                                           "cpu", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["targets"] == {
        t: {"checkpoint": f"best-{t}.pt", "epoch": epochs[t]} for t in ("valence", "arousal")}
    assert json.loads((run_dir / "eval-val.json").read_text())["targets"] == payload["targets"]
    readable = CliRunner().invoke(evaluate, ["--run", str(run_dir), "--split", "val",
                                             "--device", "cpu"])
    assert (f"valence from best-valence.pt (epoch {epochs['valence']}), arousal from "
            f"best-arousal.pt (epoch {epochs['arousal']})") in readable.stdout.splitlines()[0]


def _unlabelled_clip_store(tmp_path, video_rows: int, audio_rows: int, audio_shift: float):
    """A store with one clip "new" in the predict split and no labels: a 30 fps video stream of
    ones and an audio stream of twos, `audio_rows` rows `audio_shift` apart."""
    store = open_store(str(tmp_path / "s.zarr"), mode="a", dataset="affwild2")
    video = store.create_stream(StreamInfo(name="v", dim=3, frame_shift_s=1 / 30,
                                           extra={"modality": "video"}))
    audio = store.create_stream(StreamInfo(name="a", dim=2, frame_shift_s=audio_shift,
                                           extra={"modality": "audio"}))
    labels = store.create_stream(StreamInfo(name="va", kind="label", dim=2,
                                            frame_shift_s=1 / 30))
    with store.part_writer(video, "p0") as v, store.part_writer(audio, "p0") as a:
        v.write_clip("new", np.ones((video_rows, 3), np.float32))
        a.write_clip("new", np.full((audio_rows, 2), 2.0, np.float32))
    with store.part_writer(labels, "p0"):
        pass
    store.add_clips([{"clip_id": "new", "split": "predict"}])
    store.finalize()
    return open_store(str(tmp_path / "s.zarr"))


def test_unlabelled_clips_are_predicted_to_the_end_of_their_longest_stream(tmp_path):
    # A 6.0 s video: 180 video rows at 30 fps, and an audio stream whose last window did not
    # fit (285 rows at 50 Hz = 5.70 s). Without labels the timeline ran to the shorter one's
    # end (172 rows, the last 0.3 s unpredicted); it runs to the video's end.
    from heads.data import load_frame_sequences

    store = _unlabelled_clip_store(tmp_path, video_rows=180, audio_rows=285, audio_shift=0.02)
    seqs = load_frame_sequences(store, ["new"], ["v", "a"], "va")
    assert seqs.lengths.tolist() == [180]
    assert (180 - 1) * seqs.frame_shift_s == pytest.approx(5.967, abs=1e-3)
    np.testing.assert_allclose(seqs.features[-1], [1, 1, 1, 2, 2])  # audio's last row held


def test_an_audio_stream_padded_past_the_video_adds_no_frame_after_the_last(tmp_path):
    # A 2.2 s video: 66 rows at 30 fps, and an audio encoder that pads its last window (REACT's
    # VGGish: 56 rows at 25 Hz = 2.24 s). The timeline ran to the audio's padded end: a 67th
    # row past the last video frame (the challenge files want one line per video frame, and
    # live, which predicts the frames it sees, gave 66). It runs to the video's end.
    from heads.data import load_frame_sequences

    store = _unlabelled_clip_store(tmp_path, video_rows=66, audio_rows=56, audio_shift=0.04)
    seqs = load_frame_sequences(store, ["new"], ["v", "a"], "va")
    assert seqs.lengths.tolist() == [66]
    # without a video stream the audio's own end is the clip's
    audio_only = load_frame_sequences(store, ["new"], ["a"], "va")
    assert audio_only.lengths.tolist() == [67]
