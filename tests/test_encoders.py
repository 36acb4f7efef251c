"""Encoders: each one, built with random weights, saved, loaded back through `--weights PATH`,
gives what the upstream library gives on the same input; and the registry, the weights
resolution and the fingerprints behave as the extraction runner relies on.

Everything runs offline on CPU with reduced architectures; no test downloads anything.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from extract.encoders import (
    create_encoder,
    encoder_options,
    get_spec,
    list_encoders,
    weights_available,
)
from features_store.errors import UserError

ALL_NAMES = [
    "clip-vit-b16",
    "swin-t",
    "hsemotion-enet-b0",
    "vggish",
    "vggish-react",
    "wav2vec2-base",
    "dasheng-base",
    "embeddinggemma",
    "minilm-l6",
]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Two small non-square RGB frames with smooth structure (so resizing matters)."""
    h, w = 90, 120
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for k in range(2):
        r = 127 + 120 * np.sin(xx / (7 + k) + yy / 11)
        g = 127 + 120 * np.cos(yy / (5 + k))
        b = (xx * 2 + yy + 40 * k) % 256
        out.append(np.stack([r, g, b], -1))
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def tone(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A 440 Hz tone with a 1.3 kHz partial and a little noise, float32 mono."""
    t = np.arange(int(round(sample_rate * seconds))) / sample_rate
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    wav = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1300 * t) + noise
    return wav.astype(np.float32)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Every library cache (HF hub, torch hub, ~/.hsemotion) points at an empty folder."""
    for var in ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


# ---- the registry ----------------------------------------------------------------------------


def test_registry_lists_every_encoder_with_rates_the_runner_can_use():
    specs = {spec.name: spec for spec in list_encoders()}
    assert list(specs) == ALL_NAMES
    assert specs["clip-vit-b16"].dim == 512 and specs["swin-t"].dim == 768
    assert specs["hsemotion-enet-b0"].dim == 1280
    assert specs["wav2vec2-base"].frame_shift_s == 0.02
    assert specs["dasheng-base"].frame_shift_s == 0.04
    assert specs["vggish"].frame_shift_s == 0.96 and specs["vggish"].sample_rate == 16000
    assert specs["vggish-react"].frame_shift_s == 0.04
    assert specs["vggish-react"].sample_rate == 24000
    assert specs["minilm-l6"].dim == 384 and specs["embeddinggemma"].dim == 768
    for spec in specs.values():
        assert spec.modality in ("video", "audio", "text")
        if spec.modality == "audio":
            rows_per_chunk = spec.chunk_s / spec.frame_shift_s
            assert abs(rows_per_chunk - round(rows_per_chunk)) < 1e-6, spec.name
            hop = spec.frame_shift_s * spec.sample_rate
            assert abs(hop - round(hop)) < 1e-6, spec.name
        else:
            assert spec.frame_shift_s is None and spec.chunk_s is None


def test_unknown_encoder_name_lists_the_known_ones():
    with pytest.raises(UserError) as caught:
        get_spec("clip-vit-l14")
    message = str(caught.value)
    assert "clip-vit-l14" in message and "wav2vec2-base" in message and "\n" not in message
    with pytest.raises(UserError, match="minilm-l6"):
        create_encoder("no-such-encoder", weights="random")


def test_unknown_option_is_refused_with_the_accepted_ones():
    assert encoder_options("wav2vec2-base") == {"layer": None}
    with pytest.raises(UserError, match="accepted options: layer"):
        create_encoder("wav2vec2-base", weights="random", reduced=True, layers=3)


def test_a_weights_path_that_does_not_exist_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        create_encoder("dasheng-base", weights=str(tmp_path / "nope.pt"))


# ---- missing default weights -----------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n != "minilm-l6"])
def test_missing_default_weights_say_what_to_download_and_where(name, empty_caches):
    assert weights_available(name) is False
    with pytest.raises(UserError) as caught:
        create_encoder(name)  # weights="default"
    message = str(caught.value)
    assert "\n" not in message
    assert "download" in message and "--weights PATH" in message
    assert str(empty_caches) in message  # names where to put the file


def test_minilm_weights_ship_with_the_package(empty_caches):
    assert weights_available("minilm-l6") is True


def test_default_weights_are_found_in_the_torch_hub_cache(empty_caches):
    saved = create_encoder("dasheng-base", weights="random:3", reduced=True)
    cached = empty_caches / "torch" / "hub" / "checkpoints" / "dasheng_base.pt"
    cached.parent.mkdir(parents=True)
    saved.save_weights(cached)
    assert weights_available("dasheng-base")
    loaded = create_encoder("dasheng-base")  # the checkpoint's own config says "reduced"
    assert loaded.weights_source == str(cached)
    wav = tone(16000, 1.0)
    np.testing.assert_array_equal(loaded.encode_audio(wav), saved.encode_audio(wav))


def test_default_weights_are_found_in_the_hugging_face_cache(empty_caches):
    from extract.encoders.wav2vec2 import HF_REPO

    saved = create_encoder("wav2vec2-base", weights="random", reduced=True)
    repo = empty_caches / "hf" / "hub" / ("models--" + HF_REPO.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    saved.save_weights(repo / "snapshots" / commit)
    assert weights_available("wav2vec2-base")
    loaded = create_encoder("wav2vec2-base")
    assert loaded.weights_source == HF_REPO
    assert loaded.alias == "wav2vec2-base@layer2"  # reduced has 2 layers; the last by default
    wav = tone(16000, 0.5)
    np.testing.assert_allclose(loaded.encode_audio(wav), saved.encode_audio(wav), atol=1e-6)


# ---- video encoders --------------------------------------------------------------------------


def test_clip_matches_open_clip_on_the_same_checkpoint(frames, tmp_path):
    import open_clip

    from extract.encoders.clip import REDUCED_CFG

    random_build = create_encoder("clip-vit-b16", weights="random", reduced=True)
    path = random_build.save_weights(tmp_path / "clip.pt")
    ours = create_encoder("clip-vit-b16", weights=str(path), reduced=True)
    model, _, transform = open_clip.create_model_and_transforms(
        "ViT-B-16", pretrained=str(path), force_quick_gelu=True, **REDUCED_CFG
    )
    model.eval()
    expected_input = torch.stack([transform(Image.fromarray(f)) for f in frames])
    batch = ours.preprocess(frames)
    assert batch.shape == (2, 3, 224, 224)
    torch.testing.assert_close(batch, expected_input, atol=1e-6, rtol=0)
    with torch.no_grad():
        expected = model.encode_image(expected_input)
    got = ours.encode_batch(batch)
    assert got.shape == (2, 512)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(random_build.encode_batch(batch), got, atol=1e-6, rtol=0)

    # projected=False: the pooled token before the projection (width 64 in the reduced model)
    pre = create_encoder("clip-vit-b16", weights=str(path), reduced=True, projected=False)
    pooled = pre.encode_batch(batch)
    assert pooled.shape == (2, 64) and pre.spec.dim == 64
    assert pre.alias == "clip-vit-b16@preproj@reduced"
    torch.testing.assert_close(pooled @ model.visual.proj.detach(), expected, atol=1e-5, rtol=1e-5)
    assert ours.arch["activation"] == "QuickGELU"  # a plain file: the default tag, openai


def _clip_activation(encoder) -> str:
    return type(encoder.visual.transformer.resblocks[0].mlp.gelu).__name__


def test_clip_activation_follows_the_weights_open_clip_tag(frames, tmp_path, monkeypatch):
    import open_clip

    from extract.encoders.clip import REDUCED_CFG

    path = create_encoder("clip-vit-b16", weights="random", reduced=True).save_weights(
        tmp_path / "clip.pt")
    # LAION's ViT-B/16 in the hub cache, where open_clip's laion2b_s34b_b88k tag resolves
    repo = tmp_path / "hub" / "models--laion--CLIP-ViT-B-16-laion2B-s34B-b88K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("r1")
    (repo / "snapshots" / "r1").mkdir(parents=True)
    cached = repo / "snapshots" / "r1" / "open_clip_pytorch_model.bin"
    cached.write_bytes(path.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    laion = create_encoder("clip-vit-b16", weights="default", reduced=True,
                           pretrained_tag="laion2b_s34b_b88k")
    by_path = create_encoder("clip-vit-b16", weights=str(cached), reduced=True)
    openai = create_encoder("clip-vit-b16", weights=str(path), reduced=True)
    assert _clip_activation(laion) == _clip_activation(by_path) == "GELU"
    assert _clip_activation(openai) == "QuickGELU"
    assert laion.arch["activation_source"] == "open_clip tag laion2b_s34b_b88k"
    # what open_clip itself builds for GELU weights, on the same file
    model = open_clip.create_model("ViT-B-16", pretrained=str(path), **REDUCED_CFG).eval()
    batch = laion.preprocess(frames)
    with torch.no_grad():
        expected = model.encode_image(batch)
    torch.testing.assert_close(laion.encode_batch(batch), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(openai.encode_batch(batch), expected, atol=1e-4)
    assert laion.fingerprint() != openai.fingerprint()
    # a local file: say which weights it is, or set the activation itself
    named = create_encoder("clip-vit-b16", weights=str(path), reduced=True,
                           pretrained_tag="laion2b_s34b_b88k")
    forced = create_encoder("clip-vit-b16", weights=str(cached), reduced=True, quick_gelu=True)
    assert _clip_activation(named) == "GELU" and _clip_activation(forced) == "QuickGELU"
    assert forced.arch["activation_source"] == "option quick_gelu"
    with pytest.raises(UserError, match="pretrained_tag"):
        create_encoder("clip-vit-b16", weights="random", reduced=True, pretrained_tag="laion")


def test_swin_matches_timm_on_the_same_checkpoint(frames, tmp_path):
    import timm
    from torchvision import transforms

    from extract.encoders.swin import MODEL, REDUCED_KWARGS

    path = create_encoder("swin-t", weights="random", reduced=True).save_weights(
        tmp_path / "swin.safetensors"
    )
    ours = create_encoder("swin-t", weights=str(path), reduced=True)
    # timm's own loading path for a local file
    model = timm.create_model(
        MODEL,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        num_classes=0,
        **REDUCED_KWARGS,
    ).eval()
    react = transforms.Compose(
        [  # REACT's preprocessing
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )
    expected_input = torch.stack([react(Image.fromarray(f)) for f in frames])
    batch = ours.preprocess(frames)
    torch.testing.assert_close(batch, expected_input, atol=1e-6, rtol=0)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(expected_input), pre_logits=True)
    got = ours.encode_batch(batch)
    assert got.shape == (2, 256) and ours.spec.dim == 256
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert ours.preprocessing["transform"] == "react"  # a local file: the REACT FER checkpoint


def test_swin_with_timms_imagenet_weights_uses_timms_data_config(frames, tmp_path, monkeypatch):
    import timm
    from timm.data import create_transform, resolve_data_config

    from extract.encoders.swin import HF_REPO, MODEL, REDUCED_KWARGS

    # timm's checkpoint in the hub cache, as `huggingface-cli download` leaves it
    snapshot = tmp_path / "hub" / f"models--{HF_REPO.replace('/', '--')}" / "snapshots" / "r1"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("r1")
    create_encoder("swin-t", weights="random", reduced=True).save_weights(
        snapshot / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    ours = create_encoder("swin-t", weights="default", reduced=True)
    model = timm.create_model(MODEL, pretrained=False, num_classes=0, **REDUCED_KWARGS)
    timm_eval = create_transform(**resolve_data_config({}, model=model))  # 248 bicubic, 224
    expected = torch.stack([timm_eval(Image.fromarray(f)) for f in frames])
    torch.testing.assert_close(ours.preprocess(frames), expected, atol=1e-6, rtol=0)
    assert ours.preprocessing["transform"] == "timm"
    assert ours.preprocessing["mean"] == [0.485, 0.456, 0.406]
    # the same weights with the REACT transform are another stream
    react = create_encoder("swin-t", weights="default", reduced=True, preprocess="react")
    assert react.preprocessing["transform"] == "react"
    assert react.fingerprint() != ours.fingerprint()
    with pytest.raises(UserError, match="preprocess"):
        create_encoder("swin-t", weights="random", reduced=True, preprocess="imagenet")


def test_hsemotion_matches_timm_efficientnet_on_a_state_dict(frames, tmp_path):
    import timm
    from torchvision import transforms

    path = create_encoder("hsemotion-enet-b0", weights="random").save_weights(tmp_path / "enet.pt")
    ours = create_encoder("hsemotion-enet-b0", weights=str(path))
    model = timm.create_model("efficientnet_b0", num_classes=8)
    model.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    hsemotion = transforms.Compose(
        [  # HSEmotionRecognizer.test_transforms
            transforms.Resize((224, 224)),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    expected_input = torch.stack([hsemotion(Image.fromarray(f)) for f in frames])
    batch = ours.preprocess(frames)
    torch.testing.assert_close(batch, expected_input, atol=1e-6, rtol=0)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(expected_input), pre_logits=True)
    got = ours.encode_batch(batch)
    assert got.shape == (2, 1280)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


class _Trap:
    """Unpickling this creates a file: proof that a loader ran pickled code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickled_whole_model_is_refused_without_unpickling_it(tmp_path):
    marker = tmp_path / "unpickled"
    published = tmp_path / "enet_b0_8_best_afew.pt"
    torch.save({"model": _Trap(str(marker))}, published)
    with pytest.raises(UserError) as caught:
        create_encoder("hsemotion-enet-b0", weights=str(published))
    message = str(caught.value)
    assert not marker.exists()
    assert "\n" not in message and "pickled" in message
    assert "enet_b0_8_best_afew.safetensors" in message  # how to convert, and to what


def test_hsemotion_default_accepts_a_converted_file_in_its_cache(empty_caches):
    from extract.encoders.hsemotion import CHECKPOINT

    cache = empty_caches / "home" / ".hsemotion"
    cache.mkdir(parents=True)
    create_encoder("hsemotion-enet-b0", weights="random:5").save_weights(
        cache / f"{CHECKPOINT}.safetensors"
    )
    assert weights_available("hsemotion-enet-b0")
    assert create_encoder("hsemotion-enet-b0").weights_source.endswith(".safetensors")


def test_frame_preprocessing_pickles_into_decode_workers(frames):
    encoder = create_encoder("swin-t", weights="random", reduced=True)
    clone = pickle.loads(pickle.dumps(encoder.preprocessor))
    torch.testing.assert_close(clone(frames), encoder.preprocess(frames), atol=0, rtol=0)


# ---- VGGish ----------------------------------------------------------------------------------


def reference_log_mel_examples(
    wav: np.ndarray, sample_rate: int, hop_s: float, example_s: float
) -> np.ndarray:
    """VGGish's frontend written out in float64 numpy, the way mel_features.py describes it."""
    window = int(round(sample_rate * 0.025))
    hop = int(round(sample_rate * hop_s))
    fft = 2 ** int(np.ceil(np.log2(window)))
    n_frames = 1 + (len(wav) - window) // hop
    framed = np.stack([wav[i * hop : i * hop + window] for i in range(n_frames)]).astype(float)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi / window * np.arange(window))
    magnitude = np.abs(np.fft.rfft(framed * hann, fft))

    def mel(hz):
        return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)

    bin_mel = mel(np.linspace(0, sample_rate / 2, fft // 2 + 1))
    edges = np.linspace(mel(125.0), mel(7500.0), 64 + 2)
    bank = np.zeros((fft // 2 + 1, 64))
    for band in range(64):
        low, centre, high = edges[band : band + 3]
        up = (bin_mel - low) / (centre - low)
        down = (high - bin_mel) / (high - centre)
        bank[:, band] = np.maximum(0.0, np.minimum(up, down))
    bank[0, :] = 0.0
    log_mel = np.log(magnitude @ bank + 0.01)
    size = int(round(example_s / hop_s))
    n_examples = 1 + (len(log_mel) - size) // size
    return np.stack([log_mel[i * size : (i + 1) * size] for i in range(n_examples)])


def torchvggish_state(reduced_widths=(8, 16, 32, 32, 64, 64), fc=256, seed=0) -> dict:
    """A state dict keyed as torchvggish's VGG (features.N / embeddings.N, pproc.*)."""
    gen = torch.Generator().manual_seed(seed)
    state, cin = {}, 1
    for index, cout in zip((0, 3, 6, 8, 11, 13), reduced_widths):
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * 0.3
        state[f"features.{index}.bias"] = torch.randn(cout, generator=gen) * 0.1
        cin = cout
    for index, (fin, fout) in zip((0, 2, 4), ((cin * 24, fc), (fc, fc), (fc, 128))):
        state[f"embeddings.{index}.weight"] = torch.randn(fout, fin, generator=gen) / fin**0.5
        state[f"embeddings.{index}.bias"] = torch.randn(fout, generator=gen) * 0.1
    state["pproc.pca_matrix"] = torch.eye(128)
    state["pproc.pca_means"] = torch.zeros(128, 1)
    return state


def reference_vggish_forward(state: dict, examples: np.ndarray) -> np.ndarray:
    """The VGG trunk and FC head applied straight from the state dict (functional torch)."""
    x = torch.tensor(examples, dtype=torch.float32)[:, None]
    for index in (0, 3, 6, 8, 11, 13):
        x = torch.relu(
            torch.conv2d(
                x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1
            )
        )
        if index in (0, 3, 8, 13):
            x = torch.max_pool2d(x, 2)
    x = x.permute(0, 2, 3, 1).reshape(len(x), -1)  # TensorFlow's NHWC flattening
    for index in (0, 2, 4):
        x = torch.relu(
            x @ state[f"embeddings.{index}.weight"].T + state[f"embeddings.{index}.bias"]
        )
    return x.numpy()


def test_vggish_network_has_torchvggish_keys_and_shapes():
    from extract.encoders.vggish import VGGishNetwork

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in VGGishNetwork().state_dict().items()}
    assert shapes["features.0.weight"] == (64, 1, 3, 3)
    assert shapes["features.13.weight"] == (512, 512, 3, 3)
    assert shapes["embeddings.0.weight"] == (4096, 512 * 4 * 6)
    assert shapes["embeddings.4.weight"] == (128, 4096)
    assert len(shapes) == 2 * (6 + 3)


@pytest.mark.parametrize(
    ("name", "sample_rate", "hop_s", "example_s"),
    [("vggish", 16000, 0.010, 0.96), ("vggish-react", 24000, 0.010 / 24, 0.04)],
)
def test_vggish_frontend_and_network_match_an_independent_reference(
    name, sample_rate, hop_s, example_s, tmp_path
):
    state = torchvggish_state()
    path = tmp_path / "vggish.pth"
    torch.save(state, path)
    encoder = create_encoder(name, weights=str(path), reduced=True, embedding="raw")
    example_samples = int(round(example_s * sample_rate))
    window, hop = int(round(0.025 * sample_rate)), int(round(hop_s * sample_rate))
    n_examples = 3 if name == "vggish" else 12
    # Exactly long enough for n examples under the original's unpadded framing.
    wav = tone(sample_rate, (n_examples * example_samples + window - hop) / sample_rate)
    reference = reference_log_mel_examples(wav, sample_rate, hop_s, example_s)
    assert reference.shape == (n_examples, 96, 64)
    ours = encoder.frontend.examples(torch.from_numpy(wav), 0, n_examples)[:, 0].numpy()
    np.testing.assert_allclose(ours, reference, atol=2e-4)

    rows = encoder.encode_audio(wav)
    assert rows.shape == (n_examples, 128)
    expected = reference_vggish_forward(state, reference)
    # float32 log-mel vs float64 reference: compare relative to the output scale
    np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert (rows > 0).mean() > 0.2  # a meaningful comparison, not all-zero ReLU outputs


def test_vggish_react_gives_one_row_per_25_fps_frame_and_chunks_line_up():
    encoder = create_encoder("vggish-react", weights="random", reduced=True, embedding="raw")
    wav = tone(24000, 2.0)
    whole = encoder.encode_audio(wav)
    assert whole.shape == (50, 128)
    first, second = encoder.encode_audio(wav[:24000]), encoder.encode_audio(wav[24000:])
    assert len(first) + len(second) == len(whole)
    # Only a chunk's last row sees zero padding instead of the next chunk's first samples.
    np.testing.assert_allclose(first[:-1], whole[:24], atol=1e-5)
    np.testing.assert_allclose(second, whole[25:], atol=1e-5)
    assert encoder.encode_audio(wav[:959]).shape == (0, 128)


def audioset_postprocess_reference(embeddings, matrix, means):
    """torchvggish's Postprocessor, restated from its documented definition (the PyPI package
    needs resampy and soundfile and downloads its PCA file when constructed, so it is not a test
    dependency): PCA with whitening, pca_matrix @ (embedding^T - pca_means), transposed back;
    then clip to [-2, 2] and quantise to round((x + 2) * 255 / 4). In float64."""
    projected = (matrix.astype(np.float64) @ (embeddings.astype(np.float64).T
                                             - means.reshape(-1, 1).astype(np.float64))).T
    return projected, np.round((np.clip(projected, -2.0, 2.0) + 2.0) * (255.0 / 4.0))


def test_vggish_react_post_processes_like_torchvggish_by_default():
    from extract.encoders.vggish import pca_project

    wav = tone(24000, 1.0)
    encoder = create_encoder("vggish-react", weights="random", reduced=True)
    raw = create_encoder("vggish-react", weights="random", reduced=True, embedding="raw")
    got = encoder.encode_audio(wav)
    assert got.shape == (25, 128)
    # 8-bit levels as float: integers in 0..255, and not all in one level
    assert got.dtype == np.float32 and np.all(got == np.round(got))
    assert got.min() >= 0 and got.max() <= 255 and len(np.unique(got)) > 20
    # random weights come with random PCA parameters of the published shapes
    matrix, means = (t.numpy() for t in encoder.pca)
    assert matrix.shape == (128, 128) and means.shape == (128, 1)
    embeddings = raw.encode_audio(wav)
    projected, quantised = audioset_postprocess_reference(embeddings, matrix, means)
    ours = pca_project(torch.from_numpy(embeddings), *encoder.pca).numpy()
    np.testing.assert_allclose(ours, projected, rtol=1e-6, atol=1e-6)
    # after quantisation: equal, except a value within float error of a rounding boundary
    levels = (np.clip(projected, -2, 2) + 2) * 255 / 4
    near_boundary = np.abs(levels - np.floor(levels) - 0.5) < 1e-4
    assert np.array_equal(got[~near_boundary], quantised[~near_boundary])
    # the choice is part of the stream: its own alias and fingerprint
    assert encoder.alias == "vggish-react@random@reduced"
    assert raw.alias == "vggish-react@raw@random@reduced"
    assert encoder.fingerprint() != raw.fingerprint()
    assert encoder.preprocessing["postprocess"] == "pca+quantize8"
    assert raw.preprocessing["postprocess"] == "raw"


def test_vggish_pca_parameters_come_with_the_weights(tmp_path):
    state = torchvggish_state()
    wav = tone(16000, 2.5)
    # a full torchvggish state dict carries its postprocessor (pproc.*): used by default
    torch.save(state, tmp_path / "full.pth")
    full = create_encoder("vggish", weights=str(tmp_path / "full.pth"), reduced=True)
    assert full.options["embedding"] == "postprocessed"
    # the network alone, with torchvggish's published PCA file beside it
    rng = np.random.default_rng(1)
    matrix = rng.normal(0, 0.3, (128, 128)).astype(np.float32)
    means = rng.normal(0, 0.1, (128, 1)).astype(np.float32)
    net_dir = tmp_path / "published"
    net_dir.mkdir()
    torch.save({k: v for k, v in state.items() if not k.startswith("pproc.")},
               net_dir / "vggish-10086976.pth")
    torch.save({"pca_eigen_vectors": torch.from_numpy(matrix),
                "pca_means": torch.from_numpy(means[:, 0])},
               net_dir / "vggish_pca_params-970ea276.pth")
    pca = create_encoder("vggish", weights=str(net_dir / "vggish-10086976.pth"), reduced=True)
    raw = create_encoder("vggish", weights=str(net_dir / "vggish-10086976.pth"), reduced=True,
                         embedding="raw")
    _, expected = audioset_postprocess_reference(raw.encode_audio(wav), matrix, means)
    got = pca.encode_audio(wav)
    np.testing.assert_allclose(got, expected, atol=1)  # rounding at .5 may differ by one step
    assert np.mean(got == expected) > 0.99
    assert pca.alias == "vggish@reduced" and raw.alias == "vggish@raw@reduced"
    assert pca.options["pca_params"].startswith("sha256:")
    # an explicit pca_params file wins; a network without PCA parameters stays raw, unless
    # post-processing is demanded
    alone = tmp_path / "alone.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("pproc.")}, alone)
    explicit = create_encoder("vggish", weights=str(alone), reduced=True,
                              pca_params=str(net_dir / "vggish_pca_params-970ea276.pth"))
    np.testing.assert_array_equal(explicit.encode_audio(wav), got)
    assert create_encoder("vggish", weights=str(alone), reduced=True).options["embedding"] == "raw"
    with pytest.raises(UserError, match="vggish_pca_params-970ea276.pth"):
        create_encoder("vggish", weights=str(alone), reduced=True, embedding="postprocessed")


# ---- wav2vec2 and Dasheng --------------------------------------------------------------------


def test_wav2vec2_matches_transformers_hidden_states(tmp_path):
    from safetensors.torch import save_file
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = create_encoder("wav2vec2-base", weights="random", reduced=True).save_weights(
        tmp_path / "w2v"
    )
    wav = tone(16000, 0.75)  # 12000 samples -> 37 rows of 20 ms
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=False,
    )
    values = extractor(wav, sampling_rate=16000, return_tensors="pt").input_values
    values = torch.nn.functional.pad(values, (0, 80))  # receptive field 400 - stride 320
    model = Wav2Vec2Model.from_pretrained(folder).eval()
    with torch.no_grad():
        hidden = model(values, output_hidden_states=True).hidden_states
    assert hidden[0].shape[1] == 12000 // 320

    layer1 = create_encoder("wav2vec2-base", weights=str(folder), reduced=True, layer=1)
    rows = layer1.encode_audio(wav)
    assert rows.shape == (37, 64) and layer1.alias == "wav2vec2-base@layer1@reduced"
    np.testing.assert_allclose(rows, hidden[1][0].numpy(), atol=1e-4)

    every = create_encoder("wav2vec2-base", weights=str(folder), reduced=True, layer="all")
    stacked = every.encode_audio(wav)
    assert stacked.shape == (37, 3 * 64) and every.spec.dim == 192
    for layer in range(3):
        np.testing.assert_allclose(
            stacked[:, layer * 64 : (layer + 1) * 64], hidden[layer][0].numpy(), atol=1e-4
        )

    # A CTC checkpoint's state dict ("wav2vec2." prefix, lm_head) as a single file loads too.
    ctc_state = {"wav2vec2." + k: v for k, v in model.state_dict().items()}
    ctc_state["lm_head.weight"] = torch.zeros(32, 64)
    save_file(ctc_state, tmp_path / "ctc.safetensors")
    from_file = create_encoder(
        "wav2vec2-base", weights=str(tmp_path / "ctc.safetensors"), reduced=True, layer=1
    )
    np.testing.assert_allclose(from_file.encode_audio(wav), rows, atol=1e-6)

    with pytest.raises(UserError, match="layer 7"):
        create_encoder("wav2vec2-base", weights=str(folder), reduced=True, layer=7)


def test_dasheng_matches_the_package_loading_the_same_checkpoint(tmp_path):
    from dasheng.pretrained.pretrained import Dasheng

    path = create_encoder("dasheng-base", weights="random", reduced=True).save_weights(
        tmp_path / "dasheng.pt"
    )
    ours = create_encoder("dasheng-base", weights=str(path), reduced=True)
    upstream = Dasheng.from_pretrained(str(path)).eval()
    wav = tone(16000, (640 * 37 + 500) / 16000)  # a tail of 500 samples past row 37
    with torch.no_grad():
        expected = upstream(torch.from_numpy(wav)[None])[0].numpy()
    assert len(expected) == 38  # the centred STFT rounds up; we keep floor(N / 640)
    rows = ours.encode_audio(wav)
    assert rows.shape == (37, 64)
    np.testing.assert_allclose(rows, expected[:37], atol=1e-4)


# ---- text ------------------------------------------------------------------------------------

UTTERANCES = ["I can't believe you did that!", "Well, okay.", "That is wonderful news."]


def test_minilm_real_weights_equal_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from extract.encoders.text import minilm_folder

    ours = create_encoder("minilm-l6")
    expected = SentenceTransformer(str(minilm_folder()), device="cpu").encode(UTTERANCES)
    rows = ours.encode_text(UTTERANCES)
    assert rows.shape == (3, 384) and rows.dtype == np.float32
    np.testing.assert_allclose(rows, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert ours.encode_text([]).shape == (0, 384)


@pytest.mark.parametrize("name", ["minilm-l6", "embeddinggemma"])
def test_text_random_weights_round_trip_through_a_sentence_transformers_folder(name, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = create_encoder(name, weights="random", reduced=True).save_weights(tmp_path / name)
    ours = create_encoder(name, weights=str(folder), reduced=True)
    expected = SentenceTransformer(str(folder), device="cpu").encode(UTTERANCES)
    np.testing.assert_allclose(ours.encode_text(UTTERANCES), expected, atol=1e-5)
    with pytest.raises(UserError, match="no prompt .classification."):
        create_encoder(name, weights=str(folder), reduced=True, prompt_name="classification")


# ---- fingerprints ----------------------------------------------------------------------------


def test_fingerprint_follows_weights_and_preprocessing(tmp_path):
    folder = create_encoder("wav2vec2-base", weights="random", reduced=True).save_weights(
        tmp_path / "w2v"
    )
    a = create_encoder("wav2vec2-base", weights=str(folder), reduced=True, layer=1)
    b = create_encoder("wav2vec2-base", weights=str(folder), reduced=True, layer=1)
    c = create_encoder("wav2vec2-base", weights=str(folder), reduced=True, layer=2)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    (folder / "README.md").write_text("notes that do not change the weights")
    readme = create_encoder("wav2vec2-base", weights=str(folder), reduced=True, layer=1)
    assert readme.fingerprint() == a.fingerprint()
    assert a.fingerprint()["weights"].startswith("sha256:")
    assert a.fingerprint()["weights_sha256"] == a.fingerprint()["weights"][len("sha256:") :]
    assert json.loads(json.dumps(a.fingerprint())) == a.fingerprint()

    seed0 = create_encoder("dasheng-base", weights="random", reduced=True)
    seed1 = create_encoder("dasheng-base", weights="random:1", reduced=True)
    assert seed0.fingerprint()["weights"] == "random:0"
    assert seed0.fingerprint()["weights_sha256"] is None
    assert seed0.fingerprint() != seed1.fingerprint()
    wav = tone(16000, 0.5)
    rebuilt = create_encoder("dasheng-base", weights="random", reduced=True)
    np.testing.assert_array_equal(rebuilt.encode_audio(wav), seed0.encode_audio(wav))
    assert not np.allclose(seed1.encode_audio(wav), seed0.encode_audio(wav))
    assert seed0.alias == "dasheng-base@random@reduced"
    assert create_encoder("dasheng-base", weights="random", reduced=True).fingerprint() == (
        seed0.fingerprint()
    )

    projected = create_encoder("clip-vit-b16", weights="random", reduced=True)
    pre = create_encoder("clip-vit-b16", weights="random", reduced=True, projected=False)
    assert projected.fingerprint() != pre.fingerprint()


# ---- the CLI ---------------------------------------------------------------------------------


def test_encoders_ls_json_lists_names_dims_shifts_and_availability():
    from pipelines.cli.encoders import encoders

    result = CliRunner().invoke(encoders, ["ls", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == ALL_NAMES
    assert set(rows[0]) == {
        "name",
        "modality",
        "dim",
        "frame_shift_s",
        "default_weights",
        "available",
    }
    by_name = {row["name"]: row for row in rows}
    assert by_name["minilm-l6"]["available"] is True
    assert by_name["wav2vec2-base"]["frame_shift_s"] == 0.02

    table = CliRunner().invoke(encoders, ["ls"])
    assert table.exit_code == 0 and "vggish-react" in table.output and "0.04s" in table.output
