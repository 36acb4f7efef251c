"""A store on object storage: every command works on `s3://bucket/name.zarr`, settings come from
the usual places, and training reads features through the local cache.

The S3 API is moto's, served over HTTP on 127.0.0.1 by the `s3_server` fixture (tests/servers.py);
the store code talks to it with s3fs exactly as to AWS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from servers import S3Server, s3_env, s3_server, s3_store_url  # noqa: F401  (fixtures)

from features_store import StreamInfo, open_store, verify
from pipelines.cli import cli

AFFECT = os.path.join(os.path.dirname(sys.executable), "affect")
DIM = 64


@pytest.fixture(autouse=True)
def local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECT_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "cache"
    torch.set_num_threads(threads)


def rows_of(i: int, n: int = 40) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((n + i, DIM)).astype("float32")


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def small_store(url: str):
    store = open_store(url, dataset="toy")
    store.add_clips({"clip_id": f"c{i}", "split": "train"} for i in range(4))
    info = store.create_stream(StreamInfo(name="enc", dim=DIM, dtype="float32",
                                          frame_shift_s=0.04))
    store.record_intent(info, [f"c{i}" for i in range(4)])
    with store.part_writer(info, "p0") as writer:
        for i in range(4):
            writer.write_clip(f"c{i}", rows_of(i))
    store.finalize()
    return store, info


@pytest.mark.parametrize("name", ["x.zarr", "x.h5"])
def test_store_commands_work_on_an_s3_store(s3_store_url, s3_server, tmp_path, name):
    url = s3_store_url(name)
    store, info = small_store(url)
    listed = json.loads(invoke("store", "ls", url, "--json"))
    assert [(s["alias"], s["clips"]) for s in listed] == [("enc", 4)]
    assert "4 clips" in invoke("store", "info", url, "enc")
    assert invoke("store", "verify", url).startswith("ok: 1 stream, 1 part, 4 clips")
    assert invoke("store", "finalize", url, "--prune").strip() == "finalized"
    invoke("store", "export", url, "enc", "--out", str(tmp_path / "npy"))
    assert np.array_equal(np.load(tmp_path / "npy" / "c2.npy"), rows_of(2))
    invoke("store", "import", str(tmp_path / "npy"), "--store", url, "--stream", "again",
           "--frame-shift", "0.04")
    reader = open_store(url, mode="r")
    assert np.array_equal(reader.read_clip("again", "c3"), rows_of(3))
    assert verify(reader).ok


def test_storage_options_on_the_command_line(s3_store_url, s3_server, monkeypatch):
    """No AWS_* variables at all: endpoint and credentials given as --storage-option."""
    url = s3_store_url("opts.zarr")
    small_store(url)
    for name in S3Server("127.0.0.1", 1).env:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    options = [f"--storage-option={k}={v}" for k, v in s3_server.storage_options.items()]
    env = {k: v for k, v in os.environ.items()}
    done = subprocess.run([AFFECT, "store", "verify", url, *options], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.startswith("ok: 1 stream,"), done.stderr
    # Without them the same command cannot sign its requests: one line, exit 2.
    failed = subprocess.run([AFFECT, "store", "ls", url], capture_output=True, text=True,
                            timeout=120, env={**env, "AWS_ENDPOINT_URL": s3_server.endpoint_url})
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.startswith(f"error: {url}: cannot access the store (NoCredentialsError")
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    # A bucket that does not exist is named, not created.
    missing = subprocess.run([AFFECT, "store", "ls", "s3://no-such-bucket/x.zarr", *options],
                             capture_output=True, text=True, timeout=120, env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"error: s3://no-such-bucket/x.zarr: no bucket 'no-such-bucket' at "
        f"{s3_server.endpoint_url} (create it first, e.g. `aws s3 mb s3://no-such-bucket`)")


# Another machine's writer: commits one part while this process holds a cached listing.
REMOTE_WRITER = """
import sys
import numpy as np
from features_store import open_store
store = open_store(sys.argv[1])
with store.part_writer(sys.argv[2], "w1") as writer:
    writer.write_clip("late", np.ones((50, DIM), "float32"))
""".replace("DIM", str(DIM))


def test_clean_up_never_trusts_a_cached_listing(s3_store_url):
    url = s3_store_url("stale.zarr")
    store, info = small_store(url)
    assert store.committed_parts(info) == ["p0"]  # s3fs now caches the manifests listing
    subprocess.run([sys.executable, "-c", REMOTE_WRITER, url, info.key], check=True,
                   timeout=120)
    store.finalize(prune_orphans=True)  # what the end of an extraction run does
    reader = open_store(url, mode="r")
    assert reader.committed_parts(info) == ["p0", "w1"]
    assert np.array_equal(reader.read_clip(info, "late"), np.ones((50, DIM), "float32"))
    report = verify(reader)
    assert report.ok, report.problems


@pytest.mark.slow  # about a minute on two cores: REACT extraction with three encoders
def test_extract_train_evaluate_on_s3_and_a_second_training_fetches_no_feature_part(
        s3_store_url, s3_server, local_cache, tmp_path):
    from pipelines.samples import generate_sample

    data = tmp_path / "react"
    generate_sample("react", data, clips=12, seconds=4, seed=0, size=32)
    url = s3_store_url("react.zarr")
    invoke("extract", "--dataset", "react", "--data-root", str(data), "--store", url,
           "--weights", "random", "--reduced", "--device", "cpu")
    assert invoke("store", "verify", url, "--no-values").startswith("ok:")
    train_args = ["--head", "regnn", "--store", url, "--epochs", "1", "--device", "cpu",
                  "--quiet", "--set", "iterations_per_epoch=4", "--set", "batch_size=4",
                  "--set", "cross_layers=1", "--set", "self_layers=1"]
    invoke("train", *train_args, "--out", str(tmp_path / "run1"))
    metrics = json.loads(invoke("evaluate", "--run", str(tmp_path / "run1"), "--split", "test",
                                "--json"))["metrics"]
    assert np.isfinite(metrics["FRC"])
    assert any(local_cache.rglob("part-*.npy"))  # the first run filled the local cache
    parts = f"{s3_server.bucket_of(url)}/react.zarr/streams/"
    fetched = [p for m, p in s3_server.requests("GET", parts) if "/parts/" in p]
    assert fetched  # ... by fetching parts once
    s3_server.reset_counts()
    invoke("train", *train_args, "--out", str(tmp_path / "run2"))
    invoke("evaluate", "--run", str(tmp_path / "run2"), "--split", "test", "--json")
    again = [p for m, p in s3_server.requests("GET", parts) if "/parts/" in p]
    assert again == [], again[:5]
    assert s3_server.count("GET") > 0  # it did talk to the store (metadata), just not for rows


def va_store_on_s3(url: str) -> None:
    """A small Aff-Wild2-like store: a 30 Hz face stream that encodes per-frame labels."""
    rng = np.random.default_rng(0)
    store = open_store(url, dataset="affwild2")
    face = store.create_stream(StreamInfo(name="face", dim=8, frame_shift_s=1 / 30))
    audio = store.create_stream(StreamInfo(name="audio", dim=4, frame_shift_s=0.02))
    labels = store.create_stream(StreamInfo(name="affwild2-va", kind="label", dim=2,
                                            frame_shift_s=1 / 30))
    clips = []
    with (store.part_writer(face, "p0") as face_w, store.part_writer(audio, "p0") as audio_w,
          store.part_writer(labels, "p0") as label_w):
        for k in range(8):
            n = 200
            va = 0.8 * np.sin(np.arange(n)[:, None] / 20.0 + rng.uniform(0, 6, 2))
            face_w.write_clip(f"v{k}", va @ rng.normal(size=(2, 8)) + 0.1 * rng.normal(size=(n, 8)))
            audio_w.write_clip(f"v{k}", rng.normal(size=(int(n / 30 / 0.02), 4)))
            label_w.write_clip(f"v{k}", va)
            clips.append({"clip_id": f"v{k}", "split": "train" if k < 6 else "val"})
    store.add_clips(clips)
    store.finalize()


def test_a_second_training_run_on_s3_reads_features_from_the_local_cache(
        s3_store_url, s3_server, local_cache, tmp_path):
    from heads.base import apply_overrides
    from heads.registry import get_head
    from heads.trainer import evaluate_run, train

    url = s3_store_url("va.zarr")
    va_store_on_s3(url)
    cls = get_head("transformer-lstm")
    config = apply_overrides(cls.config_cls(), [
        "features=face,audio", "d_model=16", "n_layers=1", "n_heads=2", "ffn=32",
        "lstm_hidden=16", "regressor_hidden=16", "epochs=1", "constant_epochs=1", "chunk=50",
        "batch_size=4"])
    parts = f"{s3_server.bucket_of(url)}/va.zarr/streams/"

    def part_gets() -> list[str]:
        return [p for _, p in s3_server.requests("GET", parts) if "/parts/" in p]

    s3_server.reset_counts()
    train(cls(config), url, tmp_path / "run1", device="cpu", progress=False)
    assert part_gets() and any(local_cache.rglob("part-*.npy"))
    s3_server.reset_counts()
    train(cls(config), url, tmp_path / "run2", device="cpu", progress=False)
    payload = evaluate_run(tmp_path / "run2", "val", device="cpu")
    assert np.isfinite(list(payload["metrics"].values())[0])
    assert part_gets() == []
    assert s3_server.count("GET") > 0  # metadata (listings, manifests) is still read fresh
