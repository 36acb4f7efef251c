"""`affect store ...` as a user types it: list, inspect, verify, export to the REACT baseline's
per-clip `.pth` tree and import such a tree back; bad input gets one `error:` line and code 2.
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

from features_store import StreamInfo, open_store
from pipelines.cli import cli, main

# REACT clip ids are <site>/<group>/<pid>/<clip>, as in Video_features/<site>/.../<clip>.pth.
REACT_CLIPS = [
    "NoXI/065_2016-04-14_Nottingham/Expert_video/1",
    "NoXI/065_2016-04-14_Nottingham/Novice_video/1",
    "RECOLA/group-1/P25/2",
    "UDIVA/talk/128129/FC1_T",
]
AFFECT = os.path.join(os.path.dirname(sys.executable), "affect")


def rows_of(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((30 + 7 * i, 16)).astype("float16")


# A writer process that flushes a part's rows and dies before its manifest (a killed job).
DEAD_WRITER = """
import os, sys, numpy as np
from features_store import open_store
writer = open_store(sys.argv[1]).part_writer(sys.argv[2], sys.argv[3])
writer.write_clip(sys.argv[4], np.zeros((int(sys.argv[5]), int(sys.argv[6])), "float32"))
writer.array.close()
os._exit(0)
"""


def leave_dead_orphan(store, stream: str, part_id: str, clip_id: str, rows: int, dim: int):
    subprocess.run([sys.executable, "-c", DEAD_WRITER, store.url, stream, part_id, clip_id,
                    str(rows), str(dim)], check=True, timeout=120)


@pytest.fixture(params=["x.zarr", "x.h5"])
def react_store(tmp_path, request):
    return build_react_store(str(tmp_path / request.param))


def build_react_store(url: str):
    store = open_store(url, dataset="react")
    store.add_clips({"clip_id": c, "split": "train"} for c in REACT_CLIPS)
    video = store.create_stream(
        StreamInfo(name="video", alias="clip-vit-b16", dim=16, dtype="float16",
                   frame_shift_s=0.04, weights="random")
    )
    label = store.create_stream(StreamInfo(name="va", kind="label", dim=2, frame_shift_s=None))
    with store.part_writer(video, "p0") as writer:
        for i, clip_id in enumerate(REACT_CLIPS):
            writer.write_clip(clip_id, rows_of(i))
    with store.part_writer(label, "p0") as writer:
        for clip_id in REACT_CLIPS[:2]:
            writer.write_clip(clip_id, np.array([[0.5, -0.25]]), t0=0.0, t_end=1.2)
    store.finalize()
    return store


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_ls_lists_every_stream_with_its_shape_and_size(react_store):
    result = invoke("store", "ls", react_store.url, "--json")
    assert result.exit_code == 0, result.output
    streams = {s["alias"]: s for s in json.loads(result.stdout)}
    assert set(streams) == {"clip-vit-b16", "va"}
    video = streams["clip-vit-b16"]
    assert set(video) == {
        "stream", "alias", "key", "kind", "dim", "dtype", "frame_shift_s", "clips", "rows",
        "bytes", "created",
    }
    total_rows = sum(len(rows_of(i)) for i in range(len(REACT_CLIPS)))
    assert video.pop("created")
    assert video == {
        "stream": "clip-vit-b16", "alias": "clip-vit-b16",
        "key": react_store.resolve("clip-vit-b16").key,
        "kind": "feature", "dim": 16, "dtype": "float16", "frame_shift_s": 0.04,
        "clips": 4, "rows": total_rows, "bytes": total_rows * 16 * 2,
    }
    assert (streams["va"]["kind"], streams["va"]["frame_shift_s"], streams["va"]["clips"]) == (
        "label", None, 2
    )
    table = invoke("store", "ls", react_store.url).output
    assert "clip-vit-b16" in table and "per-clip" in table
    assert "4 clips in the clip table" in table


def test_info_shows_provenance_and_per_clip_shapes(react_store):
    result = invoke("store", "info", react_store.url, "clip-vit-b16", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["attrs"]["weights"] == "random" and info["attrs"]["frame_shift_s"] == 0.04
    shapes = {c["clip_id"]: c["shape"] for c in info["clips"]}
    assert shapes == {c: [len(rows_of(i)), 16] for i, c in enumerate(REACT_CLIPS)}
    text = invoke("store", "info", react_store.url, "va").output
    assert "2 clips" in text and "t0=0s .. 1.2s" in text


def test_ls_json_calls_the_stream_column_as_the_table_does(react_store):
    table = invoke("store", "ls", react_store.url).output.splitlines()
    assert table[0].split()[0] == "stream"
    rows = json.loads(invoke("store", "ls", react_store.url, "--json").stdout)
    assert [r["stream"] for r in rows] == [line.split()[0] for line in table[1:1 + len(rows)]]
    assert all("use" not in r for r in rows)


def test_info_prints_provenance_as_readable_lines_not_python_dicts(tmp_path):
    store = open_store(str(tmp_path / "p.zarr"))
    store.create_stream(StreamInfo(
        name="swin", dim=4, frame_shift_s=0.04,
        preprocessing={"fps": 25.0, "resize": [256, 256], "crop": {"size": 224, "at": "centre"}},
        extra={"reduced": True}))
    lines = invoke("store", "info", store.url, "swin").output.splitlines()
    assert not [line for line in lines if "{" in line or "}" in line], lines
    at = next(i for i, line in enumerate(lines) if line.strip() == "preprocessing:")
    block = {line.strip() for line in lines[at + 1:at + 5]}
    assert block == {"fps: 25", "resize: 256, 256", "crop.size: 224", "crop.at: centre"}, lines
    assert "reduced: true" in [line.strip() for line in lines]


def test_verify_exits_0_when_sound_and_1_listing_problems(react_store):
    result = invoke("store", "verify", react_store.url)
    # 4 clips, held 6 times: 4 in the video stream and 2 in the label stream.
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 2 streams, 2 parts, 4 clips (6 clip-streams), "), \
        result.output
    # A writer that died mid-part leaves an orphan behind.
    leave_dead_orphan(react_store, "clip-vit-b16", "p1", "late", 93, 16)
    result = CliRunner().invoke(cli, ["store", "verify", react_store.url])
    assert result.exit_code == 1
    location = react_store.backend.part_location(react_store.resolve("clip-vit-b16").key, "p1")
    assert result.stdout.splitlines() == [
        f"{location}: part without manifest (an interrupted writer; rerun the extraction or "
        "`finalize --prune`)"
    ]
    assert "1 problem(s)" in result.stderr
    # Pruning the orphan makes the store sound again.
    assert invoke("store", "finalize", react_store.url, "--prune").exit_code == 0
    assert invoke("store", "verify", react_store.url).exit_code == 0


def test_export_pth_tree_and_import_it_back(react_store, tmp_path):
    out = tmp_path / "Video_features"
    result = invoke("store", "export", react_store.url, "clip-vit-b16", "--format", "pth",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "exported 4 clips" in result.output
    files = sorted(
        os.path.relpath(os.path.join(root, n), out)
        for root, _, names in os.walk(out)
        for n in names
    )
    assert files == sorted(f"{c}.pth" for c in REACT_CLIPS)
    # What the REACT baseline does with such a file: torch.load, then slice frames.
    first = torch.load(out / f"{REACT_CLIPS[0]}.pth", weights_only=True)
    assert first.dtype == torch.float16 and first.shape == (30, 16)
    assert np.array_equal(first.numpy(), rows_of(0))

    target = str(tmp_path / "imported.zarr")
    result = invoke("store", "import", str(out), "--store", target, "--stream", "react-video",
                    "--frame-shift", "0.04")
    assert result.exit_code == 0, result.output
    assert "imported 4 clips" in result.output
    # The imported clips are the store's clips: the clip table lists them.
    assert "4 clips in the clip table" in invoke("store", "ls", target).output
    assert invoke("store", "verify", target).output.startswith(
        "ok: 1 stream, 1 part, 4 clips (4 clip-streams)")
    imported = open_store(target, mode="r")
    info = imported.resolve("react-video")
    assert (info.dim, info.dtype, info.frame_shift_s) == (16, "float16", 0.04)
    assert sorted(imported.committed_clip_ids(info)) == sorted(REACT_CLIPS)
    for i, clip_id in enumerate(REACT_CLIPS):
        assert imported.read_clip(info, clip_id).tobytes() == rows_of(i).tobytes()
    # Importing the same tree again finds every clip done and adds nothing.
    again = invoke("store", "import", str(out), "--store", target, "--stream", "react-video",
                   "--frame-shift", "0.04")
    assert "imported 0 clips" in again.output
    assert len(open_store(target, mode="r").index("react-video")) == 4


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["store", "ls", "{missing}"], ["{missing}: not an affect feature store (no store.json)"]),
        (["store", "ls", "{store}", "--colour"], ["No such option", "--colour"]),
        (["store", "info", "{store}", "wav2vec9"], ["no stream 'wav2vec9' (streams: clip-vit-b16"]),
        (["store", "export", "{store}", "nope", "--out", "{tmp}/o"], ["no stream 'nope'"]),
        (["store", "import", "{tmp}/none", "--store", "{tmp}/s.zarr", "--stream", "x"],
         ["{tmp}/none: not a folder"]),
        (["store", "import", "{tmp}/words", "--store", "{tmp}/s.zarr", "--stream", "x"],
         ["{tmp}/words/b.npy: array of dtype <U5 is not numeric"]),
    ],
    ids=["missing-store", "unknown-option", "unknown-stream", "export-unknown", "import-nofolder",
         "import-strings"],
)
def test_bad_input_is_one_error_line_and_exit_code_2(
    react_store, tmp_path, capsys, args, fragments
):
    names = {"store": react_store.url, "missing": str(tmp_path / "nowhere.zarr"),
             "tmp": str(tmp_path)}
    (tmp_path / "words").mkdir()
    np.save(tmp_path / "words" / "a.npy", np.zeros((3, 4), np.float32))
    np.save(tmp_path / "words" / "b.npy", np.array(["happy", "sad"]))
    with pytest.raises(SystemExit) as stopped:
        main([a.format(**names) for a in args])
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for fragment in fragments:
        assert fragment.format(**names) in lines[0]


def test_the_installed_affect_command_exit_codes(tmp_path):
    """The real program, once: 0 for success, 1 for a store with problems, 2 for bad input."""
    store = build_react_store(str(tmp_path / "x.zarr"))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([AFFECT, "store", *args], capture_output=True, text=True,
                              timeout=120)

    listed = run("ls", store.url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {s["alias"] for s in json.loads(listed.stdout)} == {"clip-vit-b16", "va"}
    leave_dead_orphan(store, "va", "p9", "x", 1, 2)
    checked = run("verify", store.url)
    assert checked.returncode == 1 and "part-p9: part without manifest" in checked.stdout
    missing = run("verify", str(tmp_path / "nowhere.zarr"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and len(missing.stderr.splitlines()) == 1
