"""The transformer family's paper profile (ABAW 2022, situAI/ABAW2022_VA_Situ-RUCAIM3 @dfe41c2).

Each quirk of the released code is checked against a plain reimplementation of the released
formula written here, and the released modules themselves (built once from the public code, see
tests/data/official/README.md) give the same outputs as ours after `import-run`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from features_store import StreamInfo, UserError, open_store
from heads.base import apply_overrides
from heads.profile import corrections
from heads.registry import get_head
from heads.trainer import _optimizer_step, import_run, load_run, predict_model, train
from heads.transformer_family.head import ChunkBatches

OFFICIAL = Path(__file__).parent / "data" / "official"
FPS = 30
# the sizes the fixtures were built with (tests/data/official/README.md)
FIXTURE_SIZES = ["features=feat", "d_model=16", "n_layers=2", "n_heads=4", "ffn=32",
                 "lstm_hidden=16", "regressor_hidden=16,16", "chunk=20", "batch_size=2",
                 "memory_pool=5", "memory_slots=6"]


def _head(name: str, *sets: str):
    cls = get_head(name)
    return cls(apply_overrides(cls.config_cls(), list(sets)))


def _model(name: str, *sets: str, dim: int = 40):
    return _head(name, *sets).build_model(type("D", (), {"dim": dim})())


# --- 8: row 0 of the position table -------------------------------------------------------


def released_sinusoid_table(n_position: int, d_hid: int, padding_idx: int | None = 0):
    """networks/transformer.py get_sinusoid_encoding_table, written out plainly."""
    table = np.array([[pos / np.power(10000, 2 * (j // 2) / d_hid) for j in range(d_hid)]
                      for pos in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    if padding_idx is not None:
        table[padding_idx] = 0.0
    return torch.FloatTensor(table)


@pytest.mark.parametrize("name", ["transformer", "transformer-lstm", "transformer-attention"])
def test_paper_positions_are_the_released_table_with_a_zero_first_row(name):
    paper = _model(name).positions.table
    want = released_sinusoid_table(251, 256)
    torch.testing.assert_close(paper, want, atol=1e-7, rtol=0)
    assert paper[0].abs().max() == 0
    fixed = _model(name, "profile=fixed").positions.table
    torch.testing.assert_close(fixed, released_sinusoid_table(251, 256, padding_idx=None),
                               atol=1e-7, rtol=0)
    assert fixed[0, 1] == 1.0  # cos(0)


# --- 9: initialisation ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["transformer-lstm", "transformer-attention"])
def test_paper_init_draws_every_linear_from_n0_002_with_zero_bias(name):
    torch.manual_seed(0)
    model = _model(name, dim=512)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    # the FFN and the attention out-projections are Linears too (tools.init_weights matches
    # every class whose name contains "Linear")
    assert any(n.endswith("linear1") for n in linears)
    assert any(n.endswith("self_attn.out_proj") for n in linears)
    weights = torch.cat([m.weight.detach().flatten() for m in linears.values()])
    assert abs(float(weights.std()) - 0.02) < 0.0005
    assert abs(float(weights.mean())) < 0.0005
    for n, m in linears.items():
        assert float(m.weight.detach().std()) == pytest.approx(0.02, rel=0.15), n
        assert m.bias is None or not m.bias.any(), n
    # what init_weights does not touch keeps PyTorch's initialisation
    layer = model.encoder.layers[0]
    assert torch.all(layer.norm1.weight == 1)
    in_proj = layer.self_attn.in_proj_weight.detach()
    assert float(in_proj.std()) == pytest.approx((2 / (4 * 256)) ** 0.5, rel=0.1)  # xavier
    torch.manual_seed(0)
    fixed = _model(name, "profile=fixed", dim=512)
    assert float(fixed.encoder.layers[0].linear1.weight.detach().std()) == pytest.approx(
        1 / (3 * 256) ** 0.5, rel=0.1)  # kaiming-uniform(a=sqrt(5)) of 256 inputs


# --- 10: key padding ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["transformer", "transformer-lstm", "transformer-attention"])
def test_paper_encoder_attends_to_padding_and_fixed_masks_it(name):
    torch.manual_seed(0)
    x = torch.randn(1, 30, 40)
    x[:, 20:] = 0.0  # a video ending inside the chunk, zero-padded as pad_sequence does
    present = torch.ones(1, 30, dtype=torch.bool)
    present[:, 20:] = False
    for profile, sees_padding in (("paper", True), ("fixed", False)):
        torch.manual_seed(1)
        model = _model(name, f"profile={profile}", "chunk=30").eval()
        with torch.no_grad():
            padded, _ = model(x, present)
            unpadded, _ = model(x[:, :20], present[:, :20])
            as_if_valid, _ = model(x, torch.ones_like(present))
        differs = (padded[:, :20] - unpadded).abs().max()
        if sees_padding:  # the released encoder: `present` changes nothing
            assert differs > 1e-4
            torch.testing.assert_close(padded, as_if_valid)
        else:
            assert differs < 1e-5


# --- 11: gradient clipping per sub-network -----------------------------------------------


RELEASED_SUB_NETWORKS = {  # our attributes of each released model_names entry
    "transformer": [["project", "encoder"], ["head"]],
    "transformer-lstm": [["project"], ["encoder"], ["lstm"], ["head"]],
    "transformer-attention": [["project", "encoder"], ["head"], ["attention"]],
    "fclstm-xl": [["project"], ["lstm"], ["head"]],
}


@pytest.mark.parametrize("name", sorted(RELEASED_SUB_NETWORKS))
def test_paper_clips_each_released_sub_network_to_norm_5_on_its_own(name):
    head = _head(name, "d_model=32", "n_layers=1", "ffn=64", "lstm_hidden=32",
                 "regressor_hidden=32", "chunk=20")
    model = head.build_model(type("D", (), {"dim": 8})())
    torch.manual_seed(0)
    grads = {n: 10 * torch.randn_like(p) for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the released backward_step: clip_grad_norm_(net.parameters(), 5) for each net in turn
    want = {}
    for attributes in RELEASED_SUB_NETWORKS[name]:
        names = [n for n in grads if n.split(".")[0] in attributes]
        norm = torch.linalg.vector_norm(torch.stack([grads[n].norm() for n in names]))
        scale = min(1.0, 5.0 / (float(norm) + 1e-6))
        want.update({n: grads[n] * scale for n in names})
    assert set(want) == set(grads)  # every parameter belongs to one sub-network
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    _optimizer_step(head.clip_groups(model), optimizer, scaler, head.config)
    for n, p in model.named_parameters():
        torch.testing.assert_close(before[n] - p.detach(), want[n], rtol=1e-5, atol=1e-6)
    fixed = _head(name, "profile=fixed")
    assert len(fixed.clip_groups(model)) == 1  # one global clip


# --- 12, 13 and the batching: config defaults ------------------------------------------------


def test_paper_defaults_seed_precision_and_no_normalisation():
    for name in RELEASED_SUB_NETWORKS:
        config = get_head(name).config_cls()
        assert config.seed == 100  # train.py: 99 + run_idx, the scripts' run_idx 1
        assert config.amp == "off"  # train.py runs in fp32
        assert config.normalize is False  # the scripts' example: norm_features=None
        assert config.batching == "groups"
        assert config.memory_heads == 4


def test_paper_batches_take_the_videos_in_groups_and_slice_at_the_longest():
    from heads.transformer_family.head import plan_groups

    lengths = np.array([47, 33, 0, 12, 70])
    clips, starts = plan_groups(lengths, np.array([1, 0, 2, 3, 4]), n_slots=2, chunk=20)
    # groups (1, 0) then (3, 4): every chunk of a group before the next group starts
    assert clips.tolist() == [[1, 0], [1, 0], [-1, 0], [3, 4], [-1, 4], [-1, 4], [-1, 4]]
    assert starts.tolist() == [[0, 0], [20, 20], [0, 40], [0, 0], [0, 20], [0, 40], [0, 60]]
    seqs = type("S", (), {})()
    seqs.lengths = lengths
    seqs.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    seqs.features = np.arange(lengths.sum() * 3, dtype=np.float32).reshape(-1, 3)
    seqs.labels = np.zeros((lengths.sum(), 2), np.float32)
    seqs.mask = np.ones(lengths.sum(), bool)
    batches = list(ChunkBatches(seqs, clips, starts, 20))
    # the released run() slices feature[:, s*L:(s+1)*L] of a batch padded to its longest video
    assert [b["x"].shape[1] for b in batches] == [20, 20, 7, 20, 20, 20, 10]
    assert batches[1]["present"][0].sum() == 13 and not batches[1]["x"][0, 13:].any()
    assert batches[0]["reset"].tolist() == [True, True]
    assert batches[3]["reset"].tolist() == [True, True]


# --- the released modules -----------------------------------------------------------------


def fixture_store(path: Path, feature: torch.Tensor, lengths: torch.Tensor) -> Path:
    """Val clips a, b = the fixture's videos (in its batch order); a train clip for the stats."""
    store = open_store(str(path), mode="a", dataset="affwild2")
    dim = feature.shape[-1]
    feat = store.create_stream(StreamInfo(name="feat", dim=dim, frame_shift_s=1 / FPS))
    labels = store.create_stream(StreamInfo(name="affwild2-va", kind="label", dim=2,
                                            frame_shift_s=1 / FPS))
    rng = np.random.default_rng(0)
    videos = {"train0": rng.normal(size=(25, dim))}
    videos.update({name: feature[i, : int(n)].numpy() for i, (name, n)
                   in enumerate(zip(("a", "b"), lengths))})
    with store.part_writer(feat, "p0") as fw, store.part_writer(labels, "p0") as lw:
        for clip_id, x in videos.items():
            fw.write_clip(clip_id, x.astype(np.float32))
            lw.write_clip(clip_id, rng.uniform(-1, 1, (len(x), 2)).astype(np.float32))
    store.add_clips([{"clip_id": c, "split": "train" if c == "train0" else "val",
                      "duration": len(x) / FPS} for c, x in videos.items()])
    store.finalize()
    return path


@pytest.mark.parametrize("name, released", [
    ("transformer-lstm", "1_net_fc.pth"),  # the released layout: one file per sub-network
    ("transformer-attention", "released.pth"),  # every sub-network in one file
])
def test_import_run_of_the_released_module_gives_its_output(tmp_path, name, released):
    folder = OFFICIAL / name
    io = torch.load(folder / "io.pt", weights_only=True)
    store = fixture_store(tmp_path / "store.zarr", io["feature"], io["length"])
    head = _head(name, *FIXTURE_SIZES)
    run_dir = import_run(head, store, folder / released, tmp_path / "run")
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["profile"] == "paper"
    assert any(k.endswith("position_embeddings.weight") for k in saved["imported"]["ignored"])
    run = load_run(run_dir, device="cpu")
    predictions = predict_model(run.head, run.model, run.data, "val")
    for i, clip_id in enumerate(("a", "b")):
        n = int(io["length"][i])
        np.testing.assert_allclose(predictions[clip_id], io["output"][i, :n].numpy(),
                                   atol=1e-5, rtol=0)
    # our corrections change the output: the released weights only fit the paper profile
    fixed = get_head(name)(apply_overrides(run.head.config, ["profile=fixed"]))
    differs = predict_model(fixed, run.model, fixed.build_data(run.store), "val")
    assert max(np.abs(differs[c] - predictions[c]).max() for c in ("a", "b")) > 1e-3


def test_import_run_names_the_first_released_key_that_does_not_fit(tmp_path):
    folder = OFFICIAL / "transformer-lstm"
    io = torch.load(folder / "io.pt", weights_only=True)
    store = fixture_store(tmp_path / "store.zarr", io["feature"], io["length"])
    wider = [s for s in FIXTURE_SIZES if not s.startswith("ffn=")] + ["ffn=64"]
    with pytest.raises(UserError, match=r"net_te\.encoder\.layers\.0\.linear1\.weight has "
                                        r"shape \(32, 16\).*needs \(64, 16\)"):
        import_run(_head("transformer-lstm", *wider), store, folder / "1_net_reg.pth",
                   tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_fixed_run_lists_its_corrections_as_deviations(tmp_path):
    io = torch.load(OFFICIAL / "transformer-lstm" / "io.pt", weights_only=True)
    store = fixture_store(tmp_path / "store.zarr", io["feature"], io["length"])
    cls = get_head("transformer-lstm")
    for profile in ("paper", "fixed"):
        head = _head("transformer-lstm", *FIXTURE_SIZES, "epochs=1", f"profile={profile}")
        train(head, store, tmp_path / profile, device="cpu", progress=False)
    paper = json.loads((tmp_path / "paper" / "config.json").read_text())
    fixed = json.loads((tmp_path / "fixed" / "config.json").read_text())
    assert fixed["profile"] == "fixed"
    assert set(corrections(cls.config_cls)) <= set(fixed["deviations"])
    assert not set(corrections(cls.config_cls)) & set(paper["deviations"])
    assert set(fixed["deviations"]) - set(paper["deviations"]) == set(
        corrections(cls.config_cls))
