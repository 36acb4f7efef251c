"""Affective-TRM's paper profile: the released code's behaviour by default, our corrections with
`profile=fixed` (issue 16, items 19-23).

Story: a researcher holding the released `emotion_model_sequential_av.pth` imports it and gets
the released module's outputs on the same inputs; a default run reads 30 video rows spread over
each clip paired with the first audio rows, resets the state per frame, supervises the batch's
last step (with the released halting exploration), trains with the released CCC formula, keeps
the final epoch and reports the released "Val CCC" beside the clip-level CCC; a `profile=fixed`
run lists each of our corrections as a deviation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from features_store import StreamInfo, open_store
from heads.base import apply_overrides
from heads.profile import corrections
from heads.registry import get_head
from heads.trainer import import_run, load_run, train
from heads.trm.config import TRMConfig
from heads.trm.data import load_aligned_clips, load_released_clips
from heads.trm.head import TRMData, trm_loss
from heads.trm.model import TinyRecursiveModel
from pipelines.cli import cli
from pipelines.synthetic.feature_stores import cremad_like_store

OFFICIAL = Path(__file__).parent / "data" / "official" / "trm"
DIMS = {"dasheng-base": 16, "hsemotion-enet-b0": 24, "embeddinggemma": 8}
SMALL = ["hidden=32", "heads=4", "batch_size=8", "lr=1e-2"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trm(*changes: str):
    cls = get_head("trm")
    return cls(apply_overrides(cls.config_cls(), [*SMALL, *changes]))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """40 clips of 20 actors, about 40 video rows each (more than the 30 the paper samples)."""
    return cremad_like_store(tmp_path_factory.mktemp("trm-profile") / "cremad.zarr", 40,
                             frames=45, actors=20, audio_shift_s=0.02, noise=0.5, dims=DIMS)


# --- the released module, imported -------------------------------------------------------------


def _released_forward(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Our paper-profile output on the fixture's padded batch, and the released output."""
    from safetensors.torch import load_file

    io = load_file(str(OFFICIAL / "io.safetensors"))
    run = load_run(run_dir, device="cpu")
    inputs, lengths = io["inputs"], io["lengths"]
    mask = torch.arange(inputs.shape[1])[None] < lengths[:, None]
    batch = {"x": inputs, "mask": mask, "lengths": lengths, "y": torch.zeros(len(inputs), 2)}
    with torch.no_grad():
        _, _, _, last = run.head._forward(run.model, batch)
    return last, io["logits"]


def test_import_run_of_the_released_module_gives_its_outputs(store, tmp_path):
    """tests/data/official/trm: the released TinyRecursiveReasoningModel_ACTV1 (random init,
    small) and its output on a zero-padded batch through the released evaluation loop."""
    run_dir = import_run(trm(), store, OFFICIAL / "model.safetensors", tmp_path / "run")
    ours, released = _released_forward(run_dir)
    assert released.abs().max() > 0.1  # the deep head was given weights: not the shortcut alone
    torch.testing.assert_close(ours, released, atol=1e-5, rtol=0)

    saved = json.loads((run_dir / "config.json").read_text())
    ignored = saved["imported"]["ignored"]
    assert {"inner.q_head.weight", "inner.q_head.bias"} <= set(ignored)
    assert "halt" in ignored["inner.q_head.weight"]
    assert "(ours) input_norm.weight" in ignored
    assert saved["profile"] == "paper"
    assert set(saved["deviations"]) == {"hidden=32", "heads=4", "batch_size=8", "lr=0.01"}


def test_import_run_command_names_the_ignored_halting_head(store, tmp_path):
    result = CliRunner().invoke(cli, [
        "import-run", "--head", "trm", "--from-official", str(OFFICIAL / "model.safetensors"),
        "--out", str(tmp_path / "run"), "--store", store, "--set", "hidden=32",
        "--set", "heads=4"])
    assert result.exit_code == 0, result.output
    assert "ignored inner.q_head.weight" in result.output
    wrong = CliRunner().invoke(cli, [
        "import-run", "--head", "trm", "--from-official", str(OFFICIAL / "model.safetensors"),
        "--out", str(tmp_path / "wrong"), "--store", store, "--set", "hidden=64"])
    message = str(wrong.exception)  # `affect` prints a UserError as its one line
    assert wrong.exit_code != 0 and len(message.splitlines()) == 1
    assert "inner.input_proj.weight has shape (32, 48)" in message


# --- item 19: which rows make a clip's input ---------------------------------------------------


def _indexed_store(path: Path, video_rows: dict[str, int], audio_rows: dict[str, int],
                   empty_video_rows: dict[str, list[int]] | None = None,
                   actor_ranks: dict[str, int] | None = None) -> str:
    """Clips whose video row i holds i + 1 and audio row i holds 1000 + i (column 0)."""
    s = open_store(str(path), mode="a", dataset="cremad")
    audio = s.create_stream(StreamInfo(name="dasheng-base", dim=2, dtype="float32",
                                       frame_shift_s=0.04))
    video = s.create_stream(StreamInfo(name="hsemotion-enet-b0", dim=3, dtype="float32",
                                       frame_shift_s=0.04))
    text = s.create_stream(StreamInfo(name="embeddinggemma", dim=1, dtype="float32"))
    labels = s.create_stream(StreamInfo(name="cremad-va", kind="label", dim=2))
    with (s.part_writer(audio, "p0") as a, s.part_writer(video, "p0") as v,
          s.part_writer(text, "p0") as t, s.part_writer(labels, "p0") as y):
        for clip_id, n in video_rows.items():
            rows = np.repeat(np.arange(1, n + 1, dtype=np.float32)[:, None], 3, axis=1)
            rows[(empty_video_rows or {}).get(clip_id, [])] = 0.0  # no face found there
            v.write_clip(clip_id, rows)
            a.write_clip(clip_id, np.repeat(1000 + np.arange(audio_rows[clip_id],
                                                             dtype=np.float32)[:, None], 2, 1))
            t.write_clip(clip_id, np.full((1, 1), 7.0, np.float32))
            y.write_clip(clip_id, np.zeros((1, 2), np.float32))
    ranks = {"actor_rank": actor_ranks} if actor_ranks else {}
    s.add_clips([{"clip_id": c, "split": "train", "speaker": c[:4], "dataset": "cremad",
                  "duration": 1.0, **{k: v[c[:4]] for k, v in ranks.items()}}
                 for c in video_rows])
    s.finalize()
    return str(path)


def _released_video(frame_rows: np.ndarray, count: int = 30) -> np.ndarray:
    """The released `VideoEncoder.process_video`, written out on a clip's per-frame feature rows
    (a zero row: MTCNN found no face): its frame loop, its batch MTCNN call (which raises on a
    mix of faces and no faces under numpy >= 1.24, answered with zeros for the clip), its
    placement and its fill."""
    n_frames = len(frame_rows)
    indices = np.linspace(0, n_frames - 1, count, dtype=int)
    picked = []
    current_frame, frame_idx = 0, 0
    while True:
        if current_frame >= n_frames:
            break
        if frame_idx < len(indices) and current_frame == indices[frame_idx]:
            picked.append(current_frame)
            frame_idx += 1
        current_frame += 1
        if frame_idx >= len(indices):
            break
    faces = [frame_rows[f] if frame_rows[f].any() else None for f in picked]
    try:
        np.array([np.zeros((1, 4)) if f is not None else None for f in faces])
    except ValueError:  # mtcnn.select_boxes on a mix of boxes and Nones
        return np.zeros((count, frame_rows.shape[1]), np.float32)
    final = np.zeros((count, frame_rows.shape[1]), np.float32)
    for i, face in enumerate(faces):
        if face is not None:
            final[i] = face
    for t in range(1, count):
        if np.all(final[t] == 0) and not np.all(final[t - 1] == 0):
            final[t] = final[t - 1]
    return final


def test_released_sampling_spreads_30_video_rows_over_the_clip_and_pairs_the_first_audio_rows(
        tmp_path):
    video = {"1001_long": 75, "1002_short_audio": 75, "1003_few_frames": 20, "1004_noface": 60,
             "1005_noface_unpicked": 60}
    audio = {"1001_long": 100, "1002_short_audio": 22, "1003_few_frames": 50, "1004_noface": 90,
             "1005_noface_unpicked": 90}
    no_face = {"1004_noface": [20, 21, 22], "1005_noface_unpicked": [1]}
    path = _indexed_store(tmp_path / "s.zarr", video, audio, no_face)
    clips = load_released_clips(open_store(path), "train",
                                ["dasheng-base", "hsemotion-enet-b0", "embeddinggemma"],
                                "hsemotion-enet-b0", "cremad-va", 30)
    for c, clip_id in enumerate(clips.clip_ids):
        start, n = clips.offsets[c], clips.lengths[c]
        rows = clips.features[start:start + n].astype(np.float32)
        # the released assembly: min(len(audio), 30 video rows), then NUM_FRAMES truncation
        assert n == min(audio[clip_id], 30), clip_id
        frame_rows = np.repeat(np.arange(1, video[clip_id] + 1, dtype=np.float32)[:, None], 3, 1)
        frame_rows[no_face.get(clip_id, [])] = 0.0
        expected_video = _released_video(frame_rows)[:n]
        np.testing.assert_array_equal(rows[:, 2:5], expected_video, err_msg=clip_id)
        np.testing.assert_array_equal(rows[:, 0], 1000 + np.arange(n))  # audio row i, by index
        assert (rows[:, 5] == 7.0).all()  # the sentence, on every row
    long = clips.features[clips.offsets[0]:clips.offsets[0] + 30, 2]
    assert long[-1] == 75  # the last video row is the clip's last frame, not frame 30
    few = clips.features[clips.offsets[2]:clips.offsets[2] + 30, 2]
    assert set(few.tolist()) == {1.0}  # 20 frames: the reader stops at the first repeat
    assert not clips.features[clips.offsets[3]:clips.offsets[3] + 30, 2:5].any()  # no face
    assert clips.features[clips.offsets[4]:clips.offsets[4] + 30, 2:5].all()  # frame 1 unread


def test_a_split_is_listed_actor_by_actor_in_the_released_shuffled_order(tmp_path):
    """The released loaders list a split's clips actor by actor in the shuffled actor order
    (the clip table's actor_rank), file order within an actor: the evaluation batches."""
    video = {"1001_a": 40, "1001_b": 40, "1002_a": 40, "1003_a": 40, "1003_b": 40}
    path = _indexed_store(tmp_path / "s.zarr", video, dict.fromkeys(video, 40))
    store = open_store(path)
    streams = ["dasheng-base", "hsemotion-enet-b0"]
    unranked = load_released_clips(store, "train", streams, "hsemotion-enet-b0", "cremad-va", 30)
    assert unranked.clip_ids == sorted(video) and not unranked.in_released_order
    ranked = _indexed_store(tmp_path / "r.zarr", video, dict.fromkeys(video, 40),
                            actor_ranks={"1001": 2, "1002": 0, "1003": 1})
    clips = load_released_clips(open_store(ranked), "train", streams, "hsemotion-enet-b0",
                                "cremad-va", 30)
    assert clips.clip_ids == ["1002_a", "1003_a", "1003_b", "1001_a", "1001_b"]
    assert clips.in_released_order


def test_max_frames_on_the_clock_keeps_the_first_frames_and_the_paper_default_samples(tmp_path):
    """`sampling=clock max_frames=30` is the first 1.2 s (not the released sampling, which
    the paper profile does)."""
    path = _indexed_store(tmp_path / "s.zarr", {"1001_a": 75}, {"1001_a": 75})
    clock = load_aligned_clips(open_store(path), "train", ["dasheng-base", "hsemotion-enet-b0"],
                               "hsemotion-enet-b0", "cremad-va")
    batch = clock.batch([0], max_frames=30)
    assert batch["x"][0, :, 2].tolist() == list(range(1, 31))
    assert TRMConfig().sampling == "released" and TRMConfig().max_frames == 30
    fixed = apply_overrides(TRMConfig(), ["profile=fixed"])
    assert (fixed.sampling, fixed.max_frames) == ("clock", 0)


# --- items 22, 23: the supervised step, halting, loss, kept epoch, "Val CCC" -------------------


def _released_ccc_loss(x: np.ndarray, y: np.ndarray) -> float:
    """src/training/engine.py CCCLoss, written out (unbiased std/var, population cov)."""
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    ccc = 2 * cov * x.std(ddof=1) * y.std(ddof=1) / (x.var(ddof=1) + y.var(ddof=1)
                                                     + (x.mean() - y.mean()) ** 2 + 1e-8)
    return 1.0 - ccc


def _released_criterion(p: np.ndarray, t: np.ndarray) -> float:
    ccc = (np.mean((p - t) ** 2) if len(p) < 2 else
           (_released_ccc_loss(p[:, 0], t[:, 0]) + _released_ccc_loss(p[:, 1], t[:, 1])) / 2)
    return ccc + 0.25 * np.mean((p - t) ** 2)


def _model(config: TRMConfig, dim: int) -> TinyRecursiveModel:
    torch.manual_seed(0)
    model = TinyRecursiveModel(dim, config)
    torch.nn.init.normal_(model.output_head.weight)  # the zero-initialised head hides the state
    return model.eval()


def _released_loop(model: TinyRecursiveModel, x: torch.Tensor,
                   not_halted: np.ndarray) -> torch.Tensor:
    """The released ACT loop with halt_max_steps=1, written out with our model's step: a halted
    sample restarts from the initial state on the new frame; one the exploration draw left
    unhalted (`not_halted[b, t]`: after step t) goes on from its state on its previous input."""
    x = model.input_norm(x)
    batch, frames, _ = x.shape
    z_h, z_l = model.initial_state(batch)
    halted = torch.ones(batch, dtype=torch.bool)
    current = torch.zeros_like(x[:, 0])
    for t in range(frames):
        reset = halted.view(-1, 1, 1)
        init_h, init_l = model.initial_state(batch)
        z_h, z_l = torch.where(reset, init_h, z_h), torch.where(reset, init_l, z_l)
        current = torch.where(halted[:, None], x[:, t], current)
        z_h, z_l = model.step(model.input_proj(current)[:, None], z_h, z_l)
        out = model.output_head(z_h[:, 0]) + model.shortcut(current)
        halted = ~torch.from_numpy(not_halted[:, t])
    return out


def test_paper_mode_supervises_the_batch_last_padded_step_with_the_released_halting():
    head = trm()
    config = head.config
    assert (config.per_frame, config.last_step, config.halt_exploration) == (False, "batch", 0.05)
    lengths = torch.tensor([6, 3, 6, 4])
    x = torch.randn(4, 6, 10) * (torch.arange(6)[None, :, None] < lengths[:, None, None])
    model = _model(config, 10)
    not_halted = np.zeros((4, 6), bool)
    not_halted[0, 4] = True  # sample 0: its last step goes on from step 4, on frame 4
    not_halted[2, 2:5] = True  # sample 2: three unhalted draws: steps 2..5 all on frame 2
    repeats = torch.tensor([1, 0, 3, 0])  # the counts ClipBatches draws for the same events
    batch = {"x": x, "mask": torch.arange(6)[None] < lengths[:, None], "lengths": lengths,
             "y": torch.zeros(4, 2), "halt_repeats": repeats}
    with torch.no_grad():
        _, _, _, ours = head._forward(model, batch)
        expected = _released_loop(model, x, not_halted)
        assert torch.allclose(ours, expected, atol=1e-6)
        # without draws (evaluation), each sample's output is its last padded step's: zeros
        # for the shorter clips 1 and 3, so they get the same output
        _, _, _, plain = head._forward(model, {k: v for k, v in batch.items()
                                               if k != "halt_repeats"})
        assert torch.allclose(plain, _released_loop(model, x, np.zeros((4, 6), bool)),
                              atol=1e-6)
        assert torch.allclose(plain[1], plain[3])
    fixed = get_head("trm")(apply_overrides(config, ["profile=fixed"]))
    with torch.no_grad():
        _, _, _, own = fixed._forward(_model(fixed.config, 10), batch)
    assert not torch.allclose(own[1], own[3])  # fixed: each clip's own frames


def test_halting_draws_come_from_the_epoch_generator_at_the_released_rate(store):
    head = trm("batch_size=40")
    data = head.build_data(open_store(store))
    counts = [head.train_batches(data, 0, np.random.default_rng(seed)).__iter__().__next__()
              ["halt_repeats"].numpy() for seed in range(200)]
    counts = np.concatenate(counts)
    assert abs((counts > 0).mean() - 0.05) < 0.015  # P(not halted) = halt_exploration_prob
    assert abs((counts > 1).mean() - 0.0025) < 0.003
    fixed = get_head("trm")(apply_overrides(head.config, ["profile=fixed"]))
    batch = next(iter(fixed.train_batches(data, 0, np.random.default_rng(0))))
    assert "halt_repeats" not in batch


def test_paper_loss_is_the_released_criterion_and_val_ccc_its_mean_over_batches():
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(9, 2)), rng.normal(size=(9, 2))
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    mask = torch.ones(9, dtype=torch.bool)
    assert float(trm_loss(p, t, mask, 0.25, TRMConfig().ccc_formula)) == pytest.approx(
        _released_criterion(pred, target), rel=1e-5)
    one = float(trm_loss(p[:1], t[:1], mask[:1], 0.25, "original"))  # a batch of one clip
    assert one == pytest.approx(_released_criterion(pred[:1], target[:1]), rel=1e-5)
    head = trm("batch_size=4")
    batches = [slice(0, 4), slice(4, 8), slice(8, 9)]
    ccc_parts = [_released_criterion(pred[b], target[b]) - 0.25 * np.mean((pred[b] - target[b])
                                                                          ** 2)
                 for b in batches]
    assert head.released_val_ccc(pred, target) == pytest.approx(1 - np.mean(ccc_parts),
                                                                rel=1e-5)


def test_a_paper_run_keeps_the_final_epoch_and_reports_val_ccc_beside_the_clip_ccc(
        store, tmp_path):
    result = train(trm("epochs=2"), store, tmp_path / "run", device="cpu", progress=False)
    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 2 and all("val_ccc" in r["metrics"] and "ccc_mean" in r["metrics"]
                                   for r in evals)
    state = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert state["epoch"] == 2  # the final epoch, whatever the validation said
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["seed"] == 42 and config["config"]["amp"] == "off"
    assert set(config["deviations"]) == {"hidden=32", "heads=4", "batch_size=8", "lr=0.01",
                                         "epochs=2"}
    assert any("spread over the cached 25 fps stream" in a for a in config["approximate"])
    assert any("MTCNN face crops" in a for a in config["approximate"])
    assert any("no actor_rank" in a for a in config["approximate"])  # a synthetic clip table
    assert result.epochs_done == 2


def test_a_fixed_run_lists_its_corrections_as_deviations(store, tmp_path):
    train(trm("epochs=1", "profile=fixed"), store, tmp_path / "run", device="cpu",
          progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["profile"] == "fixed"
    assert set(corrections(TRMConfig)) <= set(config["deviations"])
    assert set(config["deviations"]) - set(corrections(TRMConfig)) == {
        "hidden=32", "heads=4", "batch_size=8", "lr=0.01", "epochs=1"}
    assert not any("spread over" in a for a in config["approximate"])


def test_per_frame_with_the_batch_last_step_is_refused_in_one_line(store):
    from features_store import UserError

    with pytest.raises(UserError, match="last_step=clip"):
        trm("per_frame=true").build_data(open_store(store))


def test_the_released_sampling_feeds_training_end_to_end(store):
    head = trm()
    data = head.build_data(open_store(store))
    assert isinstance(data, TRMData) and data.clips("train").lengths.max() == 30
    assert (data.clips("train").lengths == 30).all()  # 2x-rate audio: at least 30 rows each
