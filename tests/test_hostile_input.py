"""Issue 17, items 9-17: inputs that used to be silently wrong, hang, or end in a traceback.

Each test reproduces one finding as the user met it (a command, a file, a store someone else
made) and asserts the outcome the rule asks for: the right result, or one `error:` line naming
the file, quickly, with nothing written where it should not be.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from test_hardening import run_cli

from features_store import StreamInfo, UserError, open_store, verify
from pipelines.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_error_line(code: int, err: str) -> str:
    """The single `error:` line of a refused command (no traceback)."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    # Warnings printed before (random weights) are fine; the error is one line, and the last.
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


def write_lines(path: Path, *records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def small_store(url: str, clip_ids=("a", "b", "c"), parts: int = 1, dim: int = 4):
    """A finalized store: clip table, one feature stream split over `parts` parts."""
    store = open_store(url, dataset="toy")
    store.add_clips({"clip_id": c, "split": "train"} for c in clip_ids)
    info = store.create_stream(StreamInfo(name="video", alias="clip-vit-b16", dim=dim,
                                          dtype="float32", frame_shift_s=0.04,
                                          claims={"all": True}))
    per_part = -(-len(clip_ids) // parts)
    for p in range(parts):
        with store.part_writer(info, f"p{p}") as writer:
            for i, clip_id in enumerate(clip_ids[p * per_part:(p + 1) * per_part]):
                value = p * per_part + i
                writer.write_clip(clip_id, np.full((3 + value, dim), value, np.float32),
                                  t0=0.5 * value)
    store.finalize()
    return store


def stream_dir(store) -> Path:
    (key,) = [s.key for s in store.streams()]
    return Path(store.path) / "streams" / key


# --- 9: a store location that names no folder of its own -------------------------------------

@pytest.mark.parametrize("location", ["/", "", "//", "///", "file:///"])
def test_store_at_the_root_or_nowhere_is_refused_and_nothing_is_written(tmp_path, monkeypatch,
                                                                       location):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as refused:
        open_store(location, mode="a", dataset="toy")
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_extract_into_root_store_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    clips = write_lines(tmp_path / "clips.jsonl", {"clip_id": "a", "text": "hello"})
    code, _, err = run_cli("extract", "--clips", clips, "--store", "/", "--encoders",
                           "minilm-l6", "--weights", "random", "--reduced", "--device", "cpu",
                           capsys=capsys)
    assert "root" in one_error_line(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips.jsonl"]


# --- 10: a run remembers which store it trained on -------------------------------------------

TRM_TINY = ["--set", "hidden=16", "--set", "heads=2", "--set", "batch_size=8", "--set",
            "layers=1", "--set", "h_cycles=1"]


def tiny_cremad_store(path: Path, seed: int) -> str:
    from pipelines.synthetic.feature_stores import cremad_like_store

    return cremad_like_store(path, 24, frames=5, actors=12, seed=seed,
                             dims={"dasheng-base": 4, "hsemotion-enet-b0": 6,
                                   "embeddinggemma": 3})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A TRM run trained on `<home>/store.zarr`, named relative to `home` (as users type it)."""
    home = tmp_path_factory.mktemp("home")
    tiny_cremad_store(home / "store.zarr", seed=0)
    cwd = os.getcwd()
    os.chdir(home)
    try:
        main(["train", "--head", "trm", "--store", "store.zarr", "--out", "runs/trm",
              "--epochs", "1", "--quiet", "--device", "cpu", *TRM_TINY])
    finally:
        os.chdir(cwd)
    return home, home / "runs" / "trm"


def test_run_records_where_and_which_store_it_trained_on(trained_run):
    home, run = trained_run
    saved = json.loads((run / "config.json").read_text())
    assert saved["store"] == str(home / "store.zarr")  # absolute: valid from any folder
    assert saved["store_id"] == open_store(str(home / "store.zarr"), "r").store_id


def test_evaluate_from_another_folder_uses_the_run_store_not_a_same_named_one(
        trained_run, tmp_path, monkeypatch, capsys):
    home, run = trained_run
    code, out, _ = run_cli("evaluate", "--run", str(run), "--split", "test", "--device", "cpu",
                           "--json", capsys=capsys)
    assert code == 0
    expected = json.loads(out)["metrics"]
    tiny_cremad_store(tmp_path / "store.zarr", seed=7)  # same name, other data
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("evaluate", "--run", str(run), "--split", "test", "--device", "cpu",
                           "--json", capsys=capsys)
    assert code == 0
    assert json.loads(out)["metrics"] == expected


def test_a_different_store_found_at_the_run_store_path_is_refused(trained_run, tmp_path, capsys):
    home, run = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    other = tmp_path / "other.zarr"
    tiny_cremad_store(other, seed=3)
    saved = json.loads((copy / "config.json").read_text())
    saved["store"] = str(other)  # the run's store was replaced by another at its path
    (copy / "config.json").write_text(json.dumps(saved))
    code, _, err = run_cli("evaluate", "--run", str(copy), "--split", "test", "--device", "cpu",
                           capsys=capsys)
    line = one_error_line(code, err)
    assert saved["store_id"] in line and "--store" in line


def test_two_processes_creating_one_store_agree_on_its_id(tmp_path):
    url = str(tmp_path / "s.zarr")
    barrier = threading.Barrier(4)
    ids = []

    def create():
        barrier.wait()
        ids.append(open_store(url, mode="a", dataset="toy").store_id)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and ids[0] == open_store(url, "r").store_id


# --- 11: corrected labels are new labels -----------------------------------------------------

def test_reingest_after_a_label_file_is_corrected_stores_the_new_labels(tmp_path):
    from pipelines.datasets import get_adapter
    from pipelines.ingest import ingest
    from pipelines.samples import generate_sample

    info = generate_sample("affwild2", tmp_path / "data", clips=4, seconds=1.0, seed=0)
    store = open_store(str(tmp_path / "s.zarr"), dataset="affwild2")
    first = ingest(get_adapter("affwild2"), info.root, store)
    again = ingest(get_adapter("affwild2"), info.root, open_store(store.url))
    assert again.stream_keys == first.stream_keys
    assert again.written == {alias: 0 for alias in first.written}  # unchanged: nothing new
    label_file = sorted(Path(info.root, "Annotations").rglob("*.txt"))[0]
    lines = label_file.read_text().splitlines()
    lines[-1] = "0.123,-0.456"  # a corrected last frame, same size of file or not
    label_file.write_text("\n".join(lines) + "\n")
    corrected = ingest(get_adapter("affwild2"), info.root, open_store(store.url))
    assert corrected.stream_keys != first.stream_keys
    fresh = open_store(store.url, "r")
    (alias,) = corrected.stream_keys
    assert fresh.resolve(alias).key == corrected.stream_keys[alias]  # the alias: new labels
    clip_id = next(c for c in fresh.clip_ids() if label_file.stem in c)
    assert np.allclose(fresh.read_clip(alias, clip_id)[-1], [0.123, -0.456])
    assert verify(fresh).ok


# --- 12: verify checks data against checksums, and the index against the manifests -----------

def tampered(tmp_path: Path, name: str, parts: int = 1):
    store = small_store(str(tmp_path / f"{name}.zarr"), parts=parts)
    assert verify(open_store(store.url, "r")).ok
    return store, stream_dir(store)


def problems_of(url: str) -> list[str]:
    report = verify(open_store(url, "r"))
    assert not report.ok
    return report.problems


def first_chunk(part: Path) -> Path:
    return part / "c" / "0" / "0"


def test_verify_finds_a_flipped_bit(tmp_path):
    store, base = tampered(tmp_path, "bit")
    chunk = first_chunk(base / "parts" / "part-p0")
    data = bytearray(chunk.read_bytes())
    data[20] ^= 0x01
    chunk.write_bytes(bytes(data))
    assert any("checksum" in p for p in problems_of(store.url))


def test_verify_finds_a_chunk_zeroed_at_the_same_size(tmp_path):
    store, base = tampered(tmp_path, "zeroed")
    chunk = first_chunk(base / "parts" / "part-p0")
    chunk.write_bytes(bytes(chunk.stat().st_size))
    assert any("checksum" in p for p in problems_of(store.url))


def test_verify_finds_two_parts_arrays_swapped(tmp_path):
    store = open_store(str(tmp_path / "swap.zarr"), dataset="toy")
    info = store.create_stream(StreamInfo(name="v", dim=4, frame_shift_s=0.04))
    for p, clip_id in enumerate(("a", "b")):  # same shapes, other rows
        with store.part_writer(info, f"p{p}") as writer:
            writer.write_clip(clip_id, np.full((3, 4), p, np.float32))
    store.finalize()
    assert verify(open_store(store.url, "r")).ok
    base = stream_dir(store) / "parts"
    os.rename(base / "part-p0", base / "tmp")
    os.rename(base / "part-p1", base / "part-p0")
    os.rename(base / "tmp", base / "part-p1")
    assert sum("checksum" in p for p in problems_of(store.url)) == 2


def test_verify_finds_an_index_whose_rows_were_swapped_or_times_shifted(tmp_path):
    for change in ("rows", "t0"):
        store, base = tampered(tmp_path, f"index-{change}")
        index = json.loads((base / "index.json").read_text())
        if change == "rows":
            index["row_start"][0], index["row_start"][1] = (index["row_start"][1],
                                                            index["row_start"][0])
        else:
            index["t0"] = [t + 5.0 for t in index["t0"]]
        (base / "index.json").write_text(json.dumps(index))
        assert any("index.json" in p and "disagrees" in p for p in problems_of(store.url))


def test_verify_finds_a_deleted_stream_json(tmp_path):
    store, base = tampered(tmp_path, "no-stream-json")
    (base / "stream.json").unlink()
    assert any("no stream.json" in p for p in problems_of(store.url))


def test_verify_finds_a_deleted_clip_table(tmp_path):
    store, _ = tampered(tmp_path, "no-clips")
    shutil.rmtree(Path(store.path) / "clips")
    assert any("clip table" in p for p in problems_of(store.url))


def test_verify_finds_the_deleted_clip_table_of_an_extracted_store(tmp_path, capsys):
    clips = write_lines(tmp_path / "clips.jsonl", {"clip_id": "a", "text": "hello"},
                        {"clip_id": "b", "text": "there"})
    store = str(tmp_path / "s.zarr")
    code, _, err = run_cli("extract", "--clips", clips, "--store", store, "--encoders",
                           "minilm-l6", "--weights", "random", "--reduced", "--device", "cpu",
                           capsys=capsys)
    assert code == 0, err
    assert verify(open_store(store, "r")).ok
    shutil.rmtree(tmp_path / "s.zarr" / "clips")
    assert any("clip table" in p for p in problems_of(store))


def test_verify_finds_a_nan_t0_in_a_manifest(tmp_path):
    store, base = tampered(tmp_path, "nan-t0")
    manifest = base / "manifests" / "part-p0.json"
    text = manifest.read_text().replace('"t0": 0.5', '"t0": NaN', 1)
    assert "NaN" in text
    manifest.write_text(text)
    assert any("t0" in p and "part-p0.json" in p for p in problems_of(store.url))


def test_checksums_hold_for_hdf5_and_for_parts_with_dropped_clips(tmp_path):
    store = open_store(str(tmp_path / "s.h5"), dataset="toy")
    info = store.create_stream(StreamInfo(name="v", dim=3, frame_shift_s=0.04))
    with store.part_writer(info, "p0") as writer:
        writer.begin_clip("gone")
        writer.append(np.ones((2, 3), np.float32))
        writer.drop_clip()  # dead rows stay in the array and in its checksum
        writer.write_clip("kept", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert store.manifests(info)[0].sha256
    assert verify(open_store(store.url, "r")).ok


# --- 13: a same-size edit in the middle of a media file is a new source ------------------------

def test_a_same_size_edit_in_the_middle_of_a_large_file_changes_its_digest(tmp_path):
    from extract.definition import source_digest

    path = tmp_path / "video.mp4"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 512 * 1024, dtype=np.uint8))
    path.write_bytes(bytes(data))
    before = source_digest(str(path))
    data[256 * 1024] ^= 0xFF
    path.write_bytes(bytes(data))
    assert source_digest(str(path)) != before


def test_an_edited_source_is_a_redefined_clip(tmp_path):
    from extract.definition import changed_clips, clip_definition

    path = tmp_path / "video.mp4"
    data = bytearray(os.urandom(300 * 1024))
    path.write_bytes(bytes(data))
    clip = {"clip_id": "c", "video": str(path)}
    store = open_store(str(tmp_path / "s.zarr"), dataset="toy")
    store.add_clips([{"clip_id": "c", "definition": clip_definition(clip)}])
    info = store.create_stream(StreamInfo(name="v", dim=2, frame_shift_s=0.04,
                                          extra={"modality": "video"}))
    with store.part_writer(info, "p0") as writer:
        writer.write_clip("c", np.zeros((2, 2), np.float32))
    data[150 * 1024] ^= 0x55
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1, 1))  # new mtime, same size: the digest decides
    assert [c["clip_id"] for c, _ in changed_clips(store, [clip])] == ["c"]


# --- 14: silently wrong results ----------------------------------------------------------------

@pytest.mark.parametrize("shift", ["0", "-1", "nan", "inf"])
def test_import_refuses_a_frame_shift_that_is_not_a_positive_number(tmp_path, capsys, shift):
    folder = tmp_path / "feats"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((3, 2), np.float32))
    store = str(tmp_path / "s.zarr")
    code, _, err = run_cli("store", "import", str(folder), "--store", store, "--stream", "x",
                           f"--frame-shift={shift}", capsys=capsys)
    assert "frame-shift" in one_error_line(code, err)
    assert not (tmp_path / "s.zarr" / "streams").exists()


@pytest.mark.parametrize("field, value", [("split", ["train"]), ("speaker", {"id": 1}),
                                          ("speaker", True), ("boxes", [1, 2, 3, 4]),
                                          ("boxes", {"face": "x"}),
                                          ("boxes", {"face": {"1.jpg": [0, 0, 1]}})])
def test_clips_file_fields_of_the_wrong_type_are_refused(tmp_path, field, value):
    from extract.clips import read_clips_file

    clips = write_lines(tmp_path / "clips.jsonl",
                        {"clip_id": "a", "video": "a.mp4", field: value})
    with pytest.raises(UserError) as refused:
        read_clips_file(clips)
    assert str(refused.value).startswith(f"{clips}:1:") and field in str(refused.value)


def decoded(times: list[float]):
    from extract.media_video import _Decoded

    return iter([_Decoded(i, t, None, lambda: np.zeros((2, 2, 3), np.uint8))
                 for i, t in enumerate(times)])


def test_a_range_before_a_late_starting_video_yields_no_frame_from_outside_it():
    from extract.media_video import _grid

    late = [5.0 + k / 25 for k in range(50)]
    assert list(_grid(decoded(late), 25.0, 0.0, 1.0)) == []
    inside = list(_grid(decoded(late), 25.0, 0.0, 6.0))
    assert inside and all(item.time_s < 6.0 for _, item in inside)


def test_mpeg_ts_whose_timestamps_restart_fails_instead_of_keeping_its_first_piece(tmp_path):
    import av

    from extract.media_base import MediaError
    from extract.media_video import iter_video_frames

    def segment(path: Path) -> bytes:
        with av.open(str(path), "w", format="mpegts") as out:
            stream = out.add_stream("mpeg2video", rate=25)
            stream.width = stream.height = 32
            stream.pix_fmt = "yuv420p"
            for k in range(25):
                image = np.full((32, 32, 3), 10 * k, np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return path.read_bytes()

    joined = tmp_path / "joined.ts"  # two recordings concatenated: timestamps start again
    joined.write_bytes(segment(tmp_path / "a.ts") + segment(tmp_path / "b.ts"))
    with pytest.raises(MediaError, match="timestamps restart"):
        list(iter_video_frames(joined, fps=25.0))


def test_crop_streams_say_which_clips_had_no_boxes():
    from types import SimpleNamespace

    from extract.runner import Task, whole_frame_notes

    face = SimpleNamespace(request="clip-vit-b16@face",
                           info=SimpleNamespace(alias="clip-vit-b16@face", key="k-face"))
    whole = SimpleNamespace(request="clip-vit-b16",
                            info=SimpleNamespace(alias="clip-vit-b16", key="k-whole"))
    task = Task(clips=[{"clip_id": "boxed", "boxes": {"face": [0, 0, 4, 4]}},
                       {"clip_id": "bare"},
                       {"clip_id": "body-only", "boxes": {"body": [0, 0, 1, 1]}}],
                pending={"k-face": ["boxed", "bare", "body-only"], "k-whole": ["bare"]})
    notes = whole_frame_notes([task], [face, whole])
    assert len(notes) == 1 and "clip-vit-b16@face" in notes[0] and "2 clips" in notes[0]
    assert "'bare'" in notes[0] and "whole frames" in notes[0]


def test_predict_refuses_to_export_nan_predictions(trained_run, tmp_path, capsys):
    import torch

    _, run = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for name in ("best.pt", "last.pt"):
        path = copy / "checkpoints" / name
        if path.exists():
            state = torch.load(path, weights_only=True)
            state["model"] = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v
                              for k, v in state["model"].items()}
            torch.save(state, path)
    code, _, err = run_cli("predict", "--run", str(copy), "--split", "test", "--device", "cpu",
                           "--export", str(tmp_path / "out"), capsys=capsys)
    assert "NaN" in one_error_line(code, err)
    assert not (tmp_path / "out").exists()


# --- 15: every head setting has a range --------------------------------------------------------

def test_every_field_of_every_head_config_has_a_range_rule():
    from heads.base import unruled_fields
    from heads.registry import get_head, list_heads

    shipped = [n for n in list_heads() if get_head(n).__module__.startswith("heads.")]
    missing = {name: unruled_fields(get_head(name).config_cls) for name in shipped}
    assert len(shipped) >= 8  # other test modules register heads of their own
    assert {k: v for k, v in missing.items() if v} == {}


@pytest.mark.parametrize("setting", ["layers=0", "h_cycles=-1", "mse_weight=-1", "hidden=0",
                                     "heads=0", "expansion=0", "betas=2,3", "seed=-1",
                                     "lr=1e308", "rms_eps=-1", "lr=nan", "epochs=0"])
def test_nonsense_trm_settings_are_refused_by_name(setting):
    from heads.base import apply_overrides
    from heads.trm.config import TRMConfig

    with pytest.raises(UserError) as refused:
        apply_overrides(TRMConfig(), [setting])
    assert str(refused.value).startswith(setting.split("=")[0] + "=")


def test_trm_refuses_an_audio_stream_as_its_video_clock(tmp_path):
    from heads.trainer import train
    from heads.trm.config import TRMConfig
    from heads.trm.head import TRMHead

    store = open_store(tiny_cremad_store(tmp_path / "s.zarr", seed=0))
    audio = store.create_stream(StreamInfo(name="wav2vec2-base", dim=4, frame_shift_s=0.02,
                                           extra={"modality": "audio"}))
    with store.part_writer(audio, "p0") as writer:
        for clip_id in store.clip_ids():
            writer.write_clip(clip_id, np.zeros((5, 4), np.float32))
    store.finalize()
    config = TRMConfig(hidden=16, heads=2, layers=1, h_cycles=1, epochs=1,
                       video="wav2vec2-base")
    with pytest.raises(UserError, match="audio stream"):
        train(TRMHead(config), store.url, tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- 16: nothing blocks or runs without end ----------------------------------------------------

def finishes(call, seconds: float = 20.0):
    """call() in a thread; its result, or a failure if it is still running after `seconds`."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_a_fifo_named_as_a_clip_source_is_a_missing_source_not_a_hang(tmp_path):
    from extract.definition import clip_definition

    fifo = tmp_path / "video.mp4"
    os.mkfifo(fifo)
    definition = finishes(lambda: clip_definition({"clip_id": "a", "video": str(fifo)}))
    assert definition["video"]["source"]["missing"] is True


def test_a_fifo_as_a_dataset_label_file_skips_the_clip_instead_of_blocking(tmp_path):
    from pipelines.datasets import get_adapter
    from pipelines.samples import generate_sample

    info = generate_sample("affwild2", tmp_path / "data", clips=4, seconds=1.0, seed=0)
    label_file = sorted(Path(info.root, "Annotations").rglob("*.txt"))[0]
    label_file.unlink()
    os.mkfifo(label_file)
    result = finishes(lambda: get_adapter("affwild2").scan(info.root))
    assert any("not a regular file" in p["message"] for p in result.problems)


def test_a_fifo_in_an_import_folder_is_refused_not_read(tmp_path):
    from features_store.exchange import import_folder

    folder = tmp_path / "feats"
    folder.mkdir()
    np.save(folder / "b.npy", np.zeros((2, 2), np.float32))
    os.mkfifo(folder / "a.npy")
    store = open_store(str(tmp_path / "s.zarr"))
    with pytest.raises(UserError, match="not a regular file"):
        finishes(lambda: import_folder(store, str(folder), "x", None))


def test_weights_naming_a_system_folder_is_refused_quickly(tmp_path):
    from extract.encoders.weights import weights_digest

    tree = tmp_path / "usr"
    for i in range(30):
        (tree / f"d{i}").mkdir(parents=True)
        for j in range(20):
            (tree / f"d{i}" / f"f{j}").write_bytes(b"x")
    with pytest.raises(UserError, match="not a model folder"):
        finishes(lambda: weights_digest(tree), 10)


def test_a_frame_folder_with_a_huge_numbering_gap_fails_the_clip_quickly(tmp_path):
    from PIL import Image

    from extract.media_base import MediaError
    from extract.media_video import iter_video_frames

    folder = tmp_path / "frames"
    folder.mkdir()
    for n in (1, 99999999):
        Image.new("RGB", (8, 8)).save(folder / f"{n}.png")
    with pytest.raises(MediaError, match="no frame for"):
        finishes(lambda: list(iter_video_frames(folder, fps=25.0)), 20)


def test_a_one_hour_timestamp_jump_fails_the_clip_quickly():
    from extract.media_base import MediaError
    from extract.media_video import _grid

    with pytest.raises(MediaError, match="no frame for"):
        finishes(lambda: list(_grid(decoded([0.0, 0.04, 3600.0, 3600.04]), 25.0, None, None)))


@pytest.mark.parametrize("fps", [1e-300, 1e6])
def test_absurd_frame_rates_are_refused(tmp_path, fps):
    from extract.clips import read_clips_file

    clips = write_lines(tmp_path / "clips.jsonl", {"clip_id": "a", "frames": "f", "fps": fps})
    with pytest.raises(UserError, match="'fps'"):
        read_clips_file(clips)


@pytest.mark.parametrize("fps", ["inf", "nan", "1e6", "0"])
def test_absurd_extract_fps_options_are_one_error_line(tmp_path, capsys, fps):
    clips = write_lines(tmp_path / "clips.jsonl", {"clip_id": "a", "text": "hi"})
    code, _, err = run_cli("extract", "--clips", clips, "--store", str(tmp_path / "s.zarr"),
                           "--fps", fps, capsys=capsys)
    assert "--fps" in one_error_line(code, err)


def test_a_zarr_json_claiming_2_40_rows_is_reported_quickly(tmp_path, capsys):
    store, base = tampered(tmp_path, "huge")
    meta = base / "parts" / "part-p0" / "zarr.json"
    attrs = json.loads(meta.read_text())
    attrs["shape"][0] = 1 << 40
    meta.write_text(json.dumps(attrs))
    report = finishes(lambda: verify(open_store(store.url, "r"), check_values=False), 15)
    assert any("rows" in p and "part-p0" in p for p in report.problems)
    code, _, err = finishes(lambda: run_cli("store", "export", store.url, "clip-vit-b16",
                                            "--out", str(tmp_path / "out"), capsys=capsys))
    assert code in (0, 2) and "Traceback" not in err


# --- 17: tampered metadata and bad options are one line each ---------------------------------

def _set(path: Path, change) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


TAMPERINGS = {
    "manifest n_rows a string": lambda s, b: _set(b / "manifests" / "part-p0.json",
                                                  lambda d: {**d, "n_rows": "3"}),
    "manifest clips not a list": lambda s, b: _set(b / "manifests" / "part-p0.json",
                                                   lambda d: {**d, "clips": {"a": 1}}),
    "manifest entry row_start null": lambda s, b: _set(
        b / "manifests" / "part-p0.json",
        lambda d: {**d, "clips": [{**d["clips"][0], "row_start": None}, *d["clips"][1:]]}),
    "manifest a list": lambda s, b: _set(b / "manifests" / "part-p0.json", lambda d: [d]),
    "stream.json dim a string": lambda s, b: _set(b / "stream.json", lambda d: {**d, "dim": "4"}),
    "stream.json a list": lambda s, b: _set(b / "stream.json", lambda d: [d]),
    "stream.json key elsewhere": lambda s, b: _set(b / "stream.json",
                                                   lambda d: {**d, "key": "../../victim"}),
    "store.json a list": lambda s, b: _set(Path(s.path) / "store.json", lambda d: [d]),
    "store.json unknown backend": lambda s, b: _set(Path(s.path) / "store.json",
                                                    lambda d: {**d, "backend": "nosuch"}),
    "index.json columns of other lengths": lambda s, b: _set(
        b / "index.json", lambda d: {**d, "n_rows": d["n_rows"][:-1]}),
    "index.json t0 strings": lambda s, b: _set(b / "index.json",
                                               lambda d: {**d, "t0": ["x"] * len(d["t0"])}),
    "clip table records not objects": lambda s, b: _set(Path(s.path) / "clips" / "table.json",
                                                        lambda d: {**d, "clips": [1, 2]}),
    "part zarr.json not JSON": lambda s, b: (b / "parts" / "part-p0" / "zarr.json").write_text(
        "{"),
    "part zarr.json missing": lambda s, b: (b / "parts" / "part-p0" / "zarr.json").unlink(),
    "part zarr.json a FIFO": lambda s, b: _replace_with_fifo(b / "parts" / "part-p0" / "zarr.json"),
    "stream.json a FIFO": lambda s, b: _replace_with_fifo(b / "stream.json"),
    "manifest a link to a file outside": lambda s, b: _replace_with_link(
        b / "manifests" / "part-p0.json", Path(s.path).parent / "outside.json"),
}


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _replace_with_link(path: Path, target: Path) -> None:
    target.write_text(path.read_text())
    path.unlink()
    os.symlink(target, path)


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampered_store_metadata_is_reported_in_one_line_per_command(tmp_path, capsys, name):
    store, base = tampered(tmp_path, "t")
    TAMPERINGS[name](store, base)
    outcomes = {}
    for command in (["store", "verify", store.url], ["store", "ls", store.url],
                    ["store", "export", store.url, "clip-vit-b16", "--out",
                     str(tmp_path / "out")]):
        code, out, err = run_cli(*command, capsys=capsys)
        assert "Traceback" not in out + err, (command, err)
        assert code in (0, 1, 2), (command, code)
        if code == 2:
            one_error_line(code, err)
        outcomes[command[1]] = code
    assert outcomes["verify"] != 0  # verify never calls a tampered store sound
    assert not (tmp_path / "victim").exists() and not (tmp_path.parent / "victim").exists()


def test_a_store_with_a_tampered_stream_keeps_its_other_streams_readable(tmp_path):
    store = small_store(str(tmp_path / "s.zarr"))
    other = store.create_stream(StreamInfo(name="audio", dim=2, frame_shift_s=0.02))
    with store.part_writer(other, "p0") as writer:
        writer.write_clip("a", np.ones((2, 2), np.float32))
    _set(Path(store.path) / "streams" / other.key / "stream.json", lambda d: {**d, "dim": -1})
    reopened = open_store(store.url, "r")
    assert reopened.read_clip("clip-vit-b16", "a").shape == (3, 4)
    with pytest.raises(UserError, match="damaged"):
        reopened.resolve("audio")


@pytest.mark.parametrize("args, needle", [
    (["--scheduler", "bogus://x"], "--scheduler"),
    (["--scheduler-file", "{scheduler_file}"], "scheduler"),
    (["--progress-every", "nan"], "--progress-every"),
    (["--progress-every", "inf"], "--progress-every"),
    (["--weights", "random:" + "9" * 40], "random:"),
])
def test_extract_options_that_used_to_end_in_a_traceback(tmp_path, capsys, args, needle):
    bad = tmp_path / "scheduler.json"
    bad.write_text("not json")
    clips = write_lines(tmp_path / "clips.jsonl", {"clip_id": "a", "text": "hi"})
    args = [a.replace("{scheduler_file}", str(bad)) for a in args]
    code, _, err = run_cli("extract", "--clips", clips, "--store", str(tmp_path / "s.zarr"),
                           "--encoders", "minilm-l6", "--weights", "random", "--reduced",
                           "--device", "cpu", *args, capsys=capsys)
    assert needle in one_error_line(code, err)


def test_clip_weights_that_are_a_pickle_are_one_line_without_torch_advice(tmp_path, capsys):
    import collections
    import pickle

    weights = tmp_path / "w.pkl"
    weights.write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    clips = write_lines(tmp_path / "clips.jsonl", {"clip_id": "a", "text": "hi"})
    code, _, err = run_cli("extract", "--clips", clips, "--store", str(tmp_path / "s.zarr"),
                           "--encoders", "clip-vit-b16", "--weights", str(weights), "--device",
                           "cpu", capsys=capsys)
    line = one_error_line(code, err)
    assert "pickled" in line and "weights_only" not in line


@pytest.mark.parametrize("record", [
    {"clip_id": "a", "text": "x", "start": 10**400},
    {"clip_id": "a", "text": "x", "fps": -10**400},
])
def test_json_integers_beyond_any_float_are_refused(tmp_path, record):
    from extract.clips import read_clips_file

    clips = write_lines(tmp_path / "clips.jsonl", record)
    with pytest.raises(UserError, match="must be a number"):
        read_clips_file(clips)


def test_deeply_nested_json_in_a_clips_file_is_refused(tmp_path):
    from extract.clips import read_clips_file

    path = tmp_path / "clips.jsonl"
    path.write_text("[" * 200_000 + "]" * 200_000 + "\n")
    with pytest.raises(UserError, match="nested"):
        read_clips_file(str(path))


@pytest.mark.parametrize("case", ["npz", "no-columns", "long-stream", "pickle"])
def test_store_import_inputs_that_used_to_end_in_a_traceback(tmp_path, capsys, case):
    import torch

    folder = tmp_path / "feats"
    folder.mkdir()
    stream = "x"
    if case == "npz":
        with open(folder / "a.npy", "wb") as f:
            np.savez(f, a=np.zeros(3))
    elif case == "no-columns":
        np.save(folder / "a.npy", np.zeros((3, 0), np.float32))
    elif case == "long-stream":
        np.save(folder / "a.npy", np.zeros((3, 2), np.float32))
        stream = "s" * 5000
    else:
        torch.save({"features": np.zeros(3)}, folder / "a.pth")
    code, _, err = run_cli("store", "import", str(folder), "--store", str(tmp_path / "s.zarr"),
                           "--stream", stream, capsys=capsys)
    line = one_error_line(code, err)
    assert "weights_only" not in line and len(line) < 400


def test_store_export_options_that_used_to_end_in_a_traceback(tmp_path, capsys):
    store = small_store(str(tmp_path / "s.zarr"), clip_ids=("a", "x" * 300 + "/b"))
    code, _, err = run_cli("store", "export", store.url, "clip-vit-b16", "--out",
                           str(tmp_path / "o1"), "--dtype", "foo", capsys=capsys)
    assert "--dtype" in one_error_line(code, err)
    code, _, err = run_cli("store", "export", store.url, "clip-vit-b16", "--out",
                           str(tmp_path / "o2"), capsys=capsys)
    assert "too long" in one_error_line(code, err)
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    code, _, err = run_cli("store", "export", store.url, "clip-vit-b16", "--out",
                           str(loop / "x"), capsys=capsys)
    one_error_line(code, err)


@pytest.mark.parametrize("url", ["ftp://example.invalid/s.zarr", "github://o:r@main/s.zarr"])
def test_unsupported_store_urls_are_one_error_line(capsys, url):
    code, _, err = run_cli("store", "ls", url, capsys=capsys)
    one_error_line(code, err)


@pytest.mark.parametrize("args", [["--seconds", "nan"], ["--seconds", "inf"],
                                  ["--seconds", "1e9"], ["--size", "100000"],
                                  ["--seed", str(10**30)]])
def test_sample_options_out_of_range_are_one_error_line(tmp_path, capsys, args):
    code, _, err = run_cli("sample", "--layout", "cremad", "--out", str(tmp_path / "d"), *args,
                           capsys=capsys)
    one_error_line(code, err)
    assert not (tmp_path / "d").exists()


def test_metrics_frames_out_of_range_is_one_error_line(tmp_path, capsys):
    code, _, err = run_cli("metrics", "react", "--pred-dir", str(tmp_path), "--data-root",
                           str(tmp_path), "--frames", str(10**9), capsys=capsys)
    one_error_line(code, err)


@pytest.mark.parametrize("damage", ["config-list", "metrics-line", "checkpoint-shapes"])
def test_a_damaged_run_folder_is_one_error_line(trained_run, tmp_path, capsys, damage):
    import torch

    _, run = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if damage == "config-list":
        (copy / "config.json").write_text("[1, 2]")
    elif damage == "metrics-line":
        with open(copy / "metrics.jsonl", "a") as f:
            f.write("{not json\n")
    else:
        for name in ("best.pt", "last.pt"):
            path = copy / "checkpoints" / name
            if path.exists():
                state = torch.load(path, weights_only=True)
                state["model"] = {k: torch.zeros(3) for k in state["model"]}
                torch.save(state, path)
    code, out, err = run_cli("evaluate", "--run", str(copy), "--split", "test", "--device",
                             "cpu", capsys=capsys)
    if damage == "metrics-line":
        assert code == 0, err  # a cut line in the metrics log costs nothing
        code, out, err = run_cli("runs", "ls", str(tmp_path), capsys=capsys)
        assert code == 0 and "Traceback" not in err
    else:
        one_error_line(code, err)


def test_a_checkpoint_write_that_fails_midway_is_one_line_and_leaves_no_part(tmp_path,
                                                                            monkeypatch):
    import torch

    from heads import trainer

    target = tmp_path / "last.pt"
    target.write_bytes(b"the previous checkpoint")

    def failing_save(payload, path):
        # What torch's zip writer does on a full disk: some bytes, then a RuntimeError.
        Path(path).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises((UserError, OSError)) as failed:
        trainer.save_checkpoint({"model": {}}, target)
    assert "\n" not in str(failed.value) and "last.pt" in str(failed.value)
    assert target.read_bytes() == b"the previous checkpoint"  # readers never see half a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
