"""A hostile or careless user's inputs: clip ids that climb out of folders, odd clips files,
stores that cannot be written, and output that scripts read. Each mistake is one `error:` line
with exit code 2, and nothing is written outside the folder the user named.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from extract.clips import read_clips_file
from features_store import StreamInfo, UserError, open_store
from features_store.paths import clip_id_problem, safe_join
from pipelines.cli import main


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    """`affect ARGS` in-process as main() runs it: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as ended:
        main(list(args))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(ended.value.code or 0), captured.out, captured.err


def write_lines(path, *records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def small_store(url: str, clip_ids: list[str]):
    store = open_store(url, dataset="react")
    store.add_clips({"clip_id": c, "split": "train"} for c in clip_ids)
    info = store.create_stream(StreamInfo(name="video", alias="clip-vit-b16", dim=4,
                                          dtype="float32", frame_shift_s=0.04))
    with store.part_writer(info, "p0") as writer:
        for i, clip_id in enumerate(clip_ids):
            writer.write_clip(clip_id, np.full((3, 4), i, np.float32))
    store.finalize()
    return store


# --- 2: clip ids never leave a folder -----------------------------------------------------------

@pytest.mark.parametrize("clip_id", ["../../../escape/evil", "a/../../b", "/etc/evil", "a//b",
                                     "a\x00b", "", " a", "C:\\x", "a/./b"])
def test_clip_ids_that_could_escape_a_folder_are_refused_naming_the_line(tmp_path, clip_id):
    clips = write_lines(tmp_path / "clips.jsonl",
                        {"clip_id": "fine/one", "video": "a.mp4"},
                        {"clip_id": clip_id, "video": "a.mp4"})
    with pytest.raises(UserError) as refused:
        read_clips_file(clips)
    message = str(refused.value)
    assert message.startswith(f"{clips}:2:") and "\n" not in message


def test_react_style_clip_ids_are_valid():
    for clip_id in ("NoXI/065_2016-04-14_Nottingham/Expert_video/1", "dia0_utt0",
                    "1001_DFA_ANG_XX", "10-60-1280x720_left", "Ses01F impro01 (take 2)"):
        assert clip_id_problem(clip_id) is None, clip_id


def test_the_store_refuses_an_escaping_clip_id_from_any_writer(tmp_path):
    store = open_store(str(tmp_path / "s.zarr"))
    with pytest.raises(UserError, match="'..'"):
        store.add_clips([{"clip_id": "../evil"}])
    info = store.create_stream(StreamInfo(name="v", dim=2, frame_shift_s=0.04))
    with pytest.raises(UserError, match="absolute"):
        with store.part_writer(info, "p0") as writer:
            writer.write_clip("/tmp/evil", np.zeros((1, 2), np.float32))


def test_store_export_stays_inside_out_even_through_a_planted_symlink(tmp_path, capsys):
    store = small_store(str(tmp_path / "s.zarr"), ["NoXI/a/1", "NoXI/b/2"])
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    os.symlink(outside, out / "NoXI")  # a shared folder someone prepared
    code, _, err = run_cli("store", "export", store.url, "clip-vit-b16", "--out", str(out),
                           capsys=capsys)
    assert code == 2 and err.startswith("error:") and "outside" in err
    assert len(err.strip().splitlines()) == 1
    assert list(outside.iterdir()) == []


def test_head_exports_refuse_paths_outside_their_folder(tmp_path):
    from heads.regnn.head import RegnnHead
    from heads.transformer_family.export import write_challenge_files

    escape = {"../../escaped": np.zeros((1, 4, 25), np.float32)}
    with pytest.raises(UserError, match="'..'"):
        RegnnHead().export(escape, None, "test", tmp_path / "out")
    with pytest.raises(UserError, match="outside|'..'"):
        write_challenge_files({"x/..": np.zeros((3, 2))}, tmp_path / "txt")
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"], ["out", "txt"], ["txt"])
    assert not (tmp_path.parent / "escaped").exists()


def test_safe_join_keeps_folders_of_a_clip_id():
    assert safe_join("/data/out", "test", "NoXI/a/1", suffix=".npy").as_posix() == \
        "/data/out/test/NoXI/a/1.npy"
