"""REGNN: a researcher trains reversible graph networks to generate appropriate facial reactions.

Each test tells one part of the story: the motor can be run backwards, it is a contraction, clip
windows go back together, the loss looks for the closest appropriate listener, the model learns
a toy speaker -> listener mapping, and generation gives ten different reactions per speaker.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from heads.regnn.cognitive import CognitiveProcessor
from heads.regnn.config import RegnnConfig
from heads.regnn.loss import ThresholdSchedule, appropriate_min_mse, mid_loss
from heads.regnn.model import Regnn
from heads.regnn.motor import LipschitzGraphResidual, MotorProcessor, power_series_logdet
from heads.regnn.windows import overlap_add, split_windows, valid_length

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**overrides) -> RegnnConfig:
    values = dict(
        video_dim=8,
        audio_dim=4,
        out_dim=5,
        window=10,
        stride=5,
        clip_frames=40,
        model_dim=16,
        perceptual_out_dim=8,
        cross_layers=1,
        self_layers=1,
        num_heads=2,
        cognitive_hidden=8,
        edge_channels=2,
        top_k=2,
        embed_dropout=0.0,
        attn_dropout=0.0,
        relu_dropout=0.0,
        res_dropout=0.0,
        max_listeners=3,
    )
    values.update(overrides)
    return RegnnConfig(**values)


def paper_edges(batch: int, config: RegnnConfig) -> torch.Tensor:
    """Edges as the cognitive processor makes them, from random perceptual codes."""
    codes = torch.randn(batch, config.window, config.perceptual_out_dim)
    with torch.no_grad():
        return CognitiveProcessor(config)(codes)[1]


def test_paper_defaults():
    from heads.base import apply_overrides, config_from_dict, config_to_dict
    from heads.trainer import LrSchedule

    config = RegnnConfig()
    assert (config.video_dim, config.audio_dim, config.out_dim) == (768, 128, 25)
    assert (config.window, config.stride, config.windows_per_clip) == (50, 25, 29)
    assert (config.optimizer, config.lr, config.weight_decay) == ("adam", 1e-4, 5e-4)
    assert (config.batch_size, config.iterations_per_epoch, config.epochs, config.seed) == (
        128,
        100,
        100,
        1,
    )
    assert config.noise_max_abs == pytest.approx(0.06**0.5)
    assert not config.logdet and config.mid_loss
    # the trainer's schedule: full lr until epoch 9, then x0.1
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=config.lr)
    schedule = LrSchedule(optimizer, config)
    schedule.start_epoch(8)
    assert schedule.lrs() == [pytest.approx(1e-4)]
    schedule.start_epoch(9)
    assert schedule.lrs() == [pytest.approx(1e-5)]
    assert config_from_dict(RegnnConfig, config_to_dict(config)) == config
    assert apply_overrides(config, ["window=20", "milestones=5,8"]).milestones == (5, 8)


def test_the_perceptual_processor_is_the_baselines_multmodel():
    """What regnn/models/MULTModel.py and its fairseq transformer define, pinned."""
    import math

    from heads.regnn.perceptual import PerceptualProcessor, sinusoidal_positions

    torch.manual_seed(0)
    config = RegnnConfig()
    model = PerceptualProcessor(config)
    for encoder in (model.cross_modal, model.self_attention):
        assert len(encoder.blocks) == 5
        assert encoder.embed_dropout.p == 0.25
        for block in encoder.blocks:
            assert block.attention.dropout == 0.0  # attn_dropout_a / attn_dropout_v
            assert block.attention.num_heads == 4
            # one LayerNorm for query, keys and values; one before the FFN
            assert [n for n, m in block.named_children() if isinstance(m, torch.nn.LayerNorm)
                    ] == ["norm_attention", "norm_ffn"]
            assert block.ffn[2].p == 0.1 and block.res_dropout.p == 0.1
            for linear in (block.ffn[0], block.ffn[3], block.attention.out_proj):
                bound = math.sqrt(6 / (linear.in_features + linear.out_features))
                assert linear.weight.abs().max() <= bound  # xavier-uniform
                assert linear.weight.abs().max() > 0.9 * bound
                assert torch.all(linear.bias == 0)
    # video 768 -> 128 by a kernel-1 conv; audio is already 128 wide and is not projected
    assert isinstance(model.video_projection, torch.nn.Conv1d)
    assert isinstance(model.audio_projection, torch.nn.Identity)
    assert model.residual_mlp[2].p == 0.0 and model.output.out_features == 64
    # fairseq positions: numbered from 1, sines then cosines, frequencies 10000^(-i / (half-1))
    codes = sinusoidal_positions(3, 128)
    half = 64
    freq = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))
    for t in range(3):
        want = torch.cat([torch.sin((t + 1) * freq), torch.cos((t + 1) * freq)])
        torch.testing.assert_close(codes[t], want)


def test_each_deliberate_correction_can_be_switched_back_to_the_papers_code():
    from heads.base import apply_overrides

    config = RegnnConfig()
    assert (config.edge_topk, config.lipnorm_form, config.channel_weights,
            config.logdet_sign) == ("per-node", "bilinear", "softmax", "subtract")
    original = apply_overrides(config, ["edge_topk=union", "lipnorm_form=original",
                                        "channel_weights=original", "logdet_sign=add"])
    # union of all nodes' top-k lists in every row (the code's loop-variable slip)
    layer = CognitiveProcessor(original).edge_layer
    attention = torch.softmax(torch.randn(2, 8, 25, 25), dim=-1)
    strength = attention.sum(1)
    union = torch.zeros(2, 25)
    union.scatter_(-1, strength.topk(5, dim=-1).indices.flatten(1), 1.0)
    mask = layer.neighbour_mask(attention)[:, 0]
    want = torch.maximum(union[:, None, :].expand(2, 25, 25), torch.eye(25))
    torch.testing.assert_close(mask, want)
    # lipnorm with Wq Wk^T, channel weights w / sum(w) starting from ones
    residual = LipschitzGraphResidual(50, 8, 5.0, "original", "original")
    wq, wk = residual.query_key.weight.detach().split(50, dim=0)
    want = torch.linalg.matrix_norm(torch.eye(50) + 2 * 50**-0.5 * (wq @ wk.T), ord=2) + 5
    torch.testing.assert_close(residual.lipnorm(), want)
    torch.testing.assert_close(residual.channel_mix(), torch.full((8,), 1 / 8))
    with torch.no_grad():
        residual.channel_logits[0] = -1.0  # free weights leave the simplex, as in the paper
    assert residual.channel_mix().min() < 0
    # the log-det is added to the loss
    torch.manual_seed(0)
    flow = Regnn(tiny_config(logdet=True))
    paper = Regnn(tiny_config(logdet=True, logdet_sign="add"))
    paper.load_state_dict(flow.state_dict())
    batch = dict(video=torch.randn(2, 10, 8), audio=torch.randn(2, 10, 4),
                 listeners=torch.randn(2, 3, 10, 5), listener_mask=torch.ones(2, 3, dtype=bool))
    torch.manual_seed(1)
    a = flow.forward_train(**batch)
    torch.manual_seed(1)
    b = paper.forward_train(**batch)
    base = a["min_mse"] + a["mid"]
    torch.testing.assert_close(a["loss"], base - a["logdet"])
    torch.testing.assert_close(b["loss"], base + b["logdet"])
    assert a["logdet"] != 0


def test_cognitive_edges_keep_top_k_neighbours_and_are_doubly_stochastic():
    torch.manual_seed(0)
    config = RegnnConfig()
    nodes, edge = CognitiveProcessor(config)(torch.randn(3, 50, 64))
    assert nodes.shape == (3, 25, 50) and edge.shape == (3, 8, 25, 25)
    torch.testing.assert_close(edge.sum(-1), torch.ones(3, 8, 25))
    torch.testing.assert_close(edge.sum(-2), torch.ones(3, 8, 25))
    layer = CognitiveProcessor(config).edge_layer
    attention = torch.softmax(torch.randn(2, 8, 25, 25), dim=-1)
    mask = layer.neighbour_mask(attention)
    # each node: its 5 strongest neighbours, plus itself when it is not among them
    assert mask.sum(-1).min() >= 5 and mask.sum(-1).max() <= 6


def test_motor_inverse_reconstructs_its_input():
    torch.manual_seed(0)
    config = RegnnConfig()
    motor = MotorProcessor(config)
    edge = paper_edges(8, config)
    reactions = torch.rand(8, 25, 50) * 2 - 0.5
    motor.train()
    codes, logdet = motor(reactions, edge)  # first training batch initialises ActNorm
    assert logdet is None
    motor.eval()
    recovered = motor.inverse(codes, edge)
    assert (recovered - reactions).abs().max() < 1e-3
    # a fresh batch, after initialisation
    more = torch.randn(4, 25, 50) * 3
    codes, _ = motor(more, edge[:4])
    assert (motor.inverse(codes, edge[:4]) - more).abs().max() < 1e-3


def test_motor_residual_is_a_contraction():
    torch.manual_seed(1)
    config = RegnnConfig()
    residual = LipschitzGraphResidual(config.window, config.edge_channels, config.lipschitz_offset)
    with torch.no_grad():  # larger weights than at init: the bound must come from lipnorm
        residual.query_key.weight.mul_(4.0)
    edge = paper_edges(16, config)
    for distance in (1e-3, 0.1, 1.0, 5.0):
        x = torch.randn(16, 25, 50) * 2
        other = x + distance * torch.randn_like(x)
        with torch.no_grad():
            change = (residual(x, edge) - residual(other, edge)).flatten(1).norm(dim=1)
        ratio = change / (x - other).flatten(1).norm(dim=1)
        assert ratio.max() < 1.0, f"Lipschitz ratio {ratio.max():.3f} at distance {distance}"


def test_logdet_power_series_estimates_the_exact_log_determinant():
    torch.manual_seed(2)
    residual = LipschitzGraphResidual(node_features=6, edge_channels=2, lipschitz_offset=0.0)
    edge = torch.softmax(torch.randn(1, 2, 4, 4), dim=-1)
    x = torch.randn(1, 4, 6)
    jacobian = torch.autograd.functional.jacobian(lambda z: residual(z, edge).reshape(-1), x)
    exact = torch.logdet(torch.eye(24) + jacobian.reshape(24, 24))
    # 2000 copies of the same input: 2000 independent Hutchinson probes in one batch
    copies = x.expand(2000, -1, -1).clone().requires_grad_(True)
    fx = residual(copies, edge.expand(2000, -1, -1, -1))
    generator = torch.Generator().manual_seed(0)
    estimate = power_series_logdet(fx, copies, terms=8, samples=1, generator=generator).mean()
    assert estimate.item() == pytest.approx(exact.item(), abs=0.05)
    # and the model trains with it switched on
    config = tiny_config(logdet=True)
    model = Regnn(config)
    terms = model.forward_train(
        torch.randn(2, 10, 8),
        torch.randn(2, 10, 4),
        torch.rand(2, 3, 10, 5),
        torch.ones(2, 3, dtype=torch.bool),
    )
    terms["loss"].backward()
    assert torch.isfinite(terms["logdet"]) and terms["logdet"] != 0


def test_windows_split_and_overlap_add_round_trip():
    clip = torch.randn(750, 25)
    windows = split_windows(clip, 50, 25)
    assert windows.shape == (29, 50, 25)
    torch.testing.assert_close(windows[3], clip[75:125])
    torch.testing.assert_close(overlap_add(windows, 25), clip)
    # the paper's rule, by hand: first 25 frames from window 0, then halves averaged
    fake = torch.stack([torch.full((50, 1), float(i)) for i in range(29)])
    merged = overlap_add(fake, 25)[:, 0]
    assert merged[:25].eq(0).all() and merged[25:50].eq(0.5).all() and merged[-25:].eq(28).all()
    # a length the windows do not tile is padded, then cut back
    assert valid_length(760, 50, 25) == 775 and valid_length(30, 50, 25) == 50
    odd = torch.randn(760, 3)
    torch.testing.assert_close(overlap_add(split_windows(odd, 50, 25), 25, 760), odd)


def test_loss_picks_the_closest_appropriate_listener():
    prediction = torch.zeros(2, 1, 2)
    # speaker 0: listeners at squared error 4, 1 and a padded slot at 0 (must be ignored)
    # speaker 1: one listener at 9
    encoded = torch.tensor(
        [[[[2.0, 2.0]], [[1.0, 1.0]], [[0.0, 0.0]]], [[[3.0, 3.0]], [[0.0, 0.0]], [[0.0, 0.0]]]]
    )
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss, minimum, chosen = appropriate_min_mse(prediction, encoded, mask)
    assert minimum.tolist() == [1.0, 9.0] and chosen.tolist() == [1, 0]
    assert loss.item() == pytest.approx(5.0)
    # a threshold zeroes the minima at or below it
    loss, _, _ = appropriate_min_mse(prediction, encoded, mask, threshold=2.0)
    assert loss.item() == pytest.approx(4.5)
    # masked frames do not count: the second frame is padding
    frame_mask = torch.tensor([[True, False], [True, False]])
    encoded_pad = encoded.clone()
    encoded_pad[..., 1] = 100.0
    _, minimum, _ = appropriate_min_mse(prediction, encoded_pad, mask, frame_mask=frame_mask)
    assert minimum.tolist() == [1.0, 9.0]
    # mid loss: speaker 0's group mean is 1.5, each listener 0.5 away; speaker 1 is alone
    assert mid_loss(encoded, mask).item() == pytest.approx((0.25 * 4 + 0.0 * 2) / 6)


def test_a_batch_without_appropriate_listeners_trains_nothing_and_breaks_nothing():
    model = Regnn(tiny_config())
    video, audio = torch.randn(2, 10, 8), torch.randn(2, 10, 4)
    nobody = torch.zeros(2, 3, dtype=torch.bool)
    terms = model.forward_train(video, audio, torch.rand(2, 3, 10, 5), nobody)
    terms["loss"].backward()
    assert terms["loss"].item() == 0.0
    # ActNorm waits for a batch with real reactions to initialise itself
    assert not any(bool(layer.actnorm.initialized) for layer in model.motor.layers)
    some = nobody.clone()
    some[0, 0] = True
    model.forward_train(video, audio, torch.rand(2, 3, 10, 5), some)["loss"].backward()
    assert all(bool(layer.actnorm.initialized) for layer in model.motor.layers)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_threshold_is_set_from_the_running_average():
    schedule = ThresholdSchedule(divisor=3.0, at_iteration=4)
    schedule.start_epoch()
    for value in (3.0, 6.0, 9.0):
        schedule.observe(value)
    assert schedule.threshold is None
    schedule.observe(6.0)
    assert schedule.threshold == pytest.approx(2.0)
    schedule.start_epoch()
    schedule.observe(9.0)
    schedule.end_epoch()  # a short epoch still sets it
    assert schedule.threshold == pytest.approx(3.0)
    assert schedule.state_dict() == {"threshold": pytest.approx(3.0)}


def test_training_on_a_toy_problem_lowers_the_loss_and_learns_the_reactions():
    torch.manual_seed(0)
    config = tiny_config()
    model = Regnn(config)
    data = torch.Generator().manual_seed(1)
    n_speakers = 64
    video = torch.randn(n_speakers, 10, 8, generator=data)
    audio = torch.randn(n_speakers, 10, 4, generator=data)
    # three appropriate reactions per speaker, each a fixed function of the speaker's video
    mixing = torch.randn(3, 8, 5, generator=data)
    listeners = torch.stack([torch.sigmoid(video @ mixing[k]) for k in range(3)], dim=1)
    mask = torch.ones(n_speakers, 3, dtype=torch.bool)
    mask[::2, 2] = False  # half the speakers have only two appropriate listeners

    def generation_error() -> float:
        model.eval()
        reactions = model.generate_windows(video, audio, n_samples=2)  # [2, S, T, N]
        errors = ((reactions[:, :, None] - listeners[None]) ** 2).mean(dim=(-1, -2))
        model.train()
        return errors.masked_fill(~mask[None], float("inf")).amin(dim=-1).mean().item()

    error_before = generation_error()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        batch = torch.randint(0, n_speakers, (16,), generator=data)
        terms = model.forward_train(video[batch], audio[batch], listeners[batch], mask[batch])
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.3 * first, f"loss {first:.3f} -> {last:.3f}"
    mean_frame = listeners[mask].mean(dim=(0, 1))
    baseline = ((listeners[mask] - mean_frame) ** 2).mean().item()
    error_after = generation_error()
    assert error_after < error_before and error_after < 0.5 * baseline, (
        f"generation error {error_before:.3f} -> {error_after:.3f}, mean frame {baseline:.3f}"
    )


def test_generate_gives_ten_diverse_full_clip_reactions():
    torch.manual_seed(0)
    model = Regnn(RegnnConfig())  # paper-sized, random weights
    model.train()
    model.forward_train(  # one step's worth of ActNorm initialisation, as after training
        torch.randn(4, 50, 768),
        torch.randn(4, 50, 128),
        torch.rand(4, 2, 50, 25),
        torch.ones(4, 2, dtype=torch.bool),
    )
    video, audio = torch.randn(750, 768), torch.randn(750, 128)
    reactions = model.generate(video, audio, generator=torch.Generator().manual_seed(0))
    assert reactions.shape == (10, 750, 25)
    assert torch.isfinite(reactions).all()
    assert model.training  # mode restored
    diversity = reactions.var(dim=0).mean().item()
    assert diversity > 0
    again = model.generate(video, audio, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, reactions)  # a seeded generator reproduces the samples
    assert model.generate(video[:60], audio[:60], n_samples=2).shape == (2, 60, 25)


# --- the head: REGNN trained by the shared trainer on a store -----------------------------------


def toy_react_store(url: str, dyads: dict[str, int], frames: int = 60):
    """A REACT-shaped store: per dyad a speaker and a listener clip, each with video/audio
    features and 25 reaction labels that are a fixed function of its partner's video."""
    from features_store import StreamInfo, open_store

    store = open_store(url, mode="a")
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((8, 25)).astype(np.float32)
    video = store.create_stream(StreamInfo(name="swin-t", dim=8, frame_shift_s=0.04))
    audio = store.create_stream(StreamInfo(name="vggish-react", dim=4, frame_shift_s=0.04))
    labels = store.create_stream(
        StreamInfo(name="react-emotion", kind="label", dim=25, frame_shift_s=0.04)
    )
    records, rows = [], {}
    for split, n_dyads in dyads.items():
        speakers = [f"NoXI/{split}-{d}/P1/1" for d in range(n_dyads)]
        listeners = [f"NoXI/{split}-{d}/P2/1" for d in range(n_dyads)]
        for speaker, listener in zip(speakers, listeners):
            features = {
                c: rng.standard_normal((frames, 12)).astype(np.float32) for c in (speaker, listener)
            }
            reacts = {speaker: listener, listener: speaker}
            for clip in (speaker, listener):
                rows[clip] = (
                    features[clip],
                    1 / (1 + np.exp(-features[reacts[clip]][:, :8] @ mixing)),
                )
                records.append({"clip_id": clip, "split": split, "speaker": clip})
        samples = len(speakers) * 2
        # each sample's own listener is appropriate, and so is the next sample's
        matrix = np.eye(samples, dtype=bool) | np.roll(np.eye(samples, dtype=bool), 1, axis=1)
        store.put_aux(
            f"react/neighbours/{split}",
            matrix,
            {"clip_ids": speakers + listeners, "listener_ids": listeners + speakers},
        )
    store.add_clips(records)
    for info, pick in (
        (video, lambda r: r[0][:, :8]),
        (audio, lambda r: r[0][:, 8:]),
        (labels, lambda r: r[1]),
    ):
        with store.part_writer(info, "p0") as writer:
            for clip, value in rows.items():
                writer.write_clip(clip, np.ascontiguousarray(pick(value), dtype=np.float32), t0=0.0)
    store.finalize()
    return store


def test_regnn_head_trains_evaluates_and_exports_through_the_shared_trainer(tmp_path):
    import os

    from heads.registry import get_head
    from heads.trainer import load_run, predict_model, train

    store = toy_react_store(f"memory://regnn-tests/{os.getpid()}/head.zarr", {"train": 4, "val": 2})
    head_cls = get_head("regnn")
    config = tiny_config(
        out_dim=25,
        top_k=5,
        epochs=2,
        batch_size=8,
        iterations_per_epoch=3,
        n_samples=3,
        lr=3e-3,
    )
    head = head_cls(config)
    data = head.build_data(store)
    # speaker windows come from inside each clip, 4 dyads x 2 directions x 11 windows
    assert data.train_windows.shape == (8 * 11, 2)
    batch = next(iter(head.train_batches(data, 0, np.random.default_rng(0))))
    assert batch["video"].shape == (8, 10, 8) and batch["audio"].shape == (8, 10, 4)
    assert batch["listeners"].shape == (8, 3, 10, 25)
    # every sample has exactly two appropriate listeners (its own and the next sample's)
    assert batch["listener_mask"].sum(1).tolist() == [2] * 8

    result = train(head, store, tmp_path / "run", device="cpu", progress=False)
    assert result.epochs_done == 2 and result.best_metric is not None
    assert 0 <= result.final_metrics["FRC"] <= 3 and result.final_metrics["FRD"] > 0
    # epochs shorter than 100 iterations still set the min-MSE threshold, and it is saved
    assert head.threshold.threshold is not None and head.threshold.threshold > 0
    run = load_run(tmp_path / "run", checkpoint="last", store=store, device="cpu")
    assert run.head.threshold.threshold == pytest.approx(head.threshold.threshold)

    predictions = predict_model(run.head, run.model, run.data, "val")
    assert sorted(predictions) == sorted(run.data.split("val").sample_ids)
    assert all(p.shape == (3, 60, 25) for p in predictions.values())
    files = run.head.export(predictions, run.data, "val", tmp_path / "out")
    assert len(files) == 4 * 3
    first = tmp_path / "out" / "val" / "NoXI" / "val-0" / "P1" / "1" / "result-0.pth"
    assert first in files and torch.load(first).shape == (60, 25)
    again = predict_model(run.head, run.model, run.data, "val")  # seeded: reproducible
    np.testing.assert_array_equal(again["NoXI/val-0/P1/1"], predictions["NoXI/val-0/P1/1"])


def test_the_config_a_run_records_is_the_one_that_ran(tmp_path):
    # REGNN takes its input and output dims from the store's streams and runs on clips as long
    # as the store's; the report showed the requested video_dim 768 for an 8-d stream and
    # clip_frames 750 for 60-frame clips. The run's config.json says what ran.
    from heads.registry import get_head
    from heads.trainer import train

    store = toy_react_store(str(tmp_path / "react.zarr"), {"train": 3, "val": 2}, frames=60)
    head = get_head("regnn")(tiny_config(video_dim=768, audio_dim=128, out_dim=25,
                                         clip_frames=750, top_k=5, epochs=1, batch_size=8,
                                         iterations_per_epoch=1, n_samples=2))
    train(head, store, tmp_path / "run", device="cpu", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["video_dim"] == 768  # what was asked, kept
    assert saved["effective"] == {"video_dim": 8, "audio_dim": 4, "clip_frames": 60}
