"""A store is input too: one shared by someone else must not reach outside itself, and its
text must not act on the terminal (issue 17, items 5-8). Each test builds a small honest store,
makes one hostile edit, and runs the commands a user would run on it.
"""

from __future__ import annotations

import glob
import json
import os

import h5py
import numpy as np
import pytest

from extract.report import failure_line
from features_store import StreamInfo, open_store, verify
from features_store.errors import UserError
from pipelines.cli import main

DIM = 8
SECRET = (b"root:x:0:0:secret-bytes-that-must-not-leak\n" * 9)[:11 * DIM * 4]  # 11 float32 rows


def build(url: str, alias: str = "enc"):
    store = open_store(url)
    store.add_clips([{"clip_id": "a"}, {"clip_id": "b"}])
    info = store.create_stream(StreamInfo(name="enc", alias=alias, dim=DIM, dtype="float32"))
    with store.part_writer(info, "p0") as writer:
        writer.write_clip("a", np.ones((6, DIM), "float32"))
        writer.write_clip("b", np.full((5, DIM), 2, "float32"))
    store.finalize()
    return store, info


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def no_secret_in(folder) -> None:
    for path in glob.glob(os.path.join(str(folder), "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                assert b"secret-bytes" not in f.read(), path


# 5: names in the store's metadata are checked before they become paths -----------------------


@pytest.mark.parametrize("name", ["x.zarr", "x.h5"])
def test_a_stream_key_that_climbs_out_of_the_store_is_refused(tmp_path, capsys, name):
    url = str(tmp_path / "shared" / name)
    _, info = build(url)
    path = os.path.join(url, "streams", info.key, "stream.json")
    with open(path) as f:
        data = json.load(f)
    data["key"] = "../../victim"
    with open(path, "w") as f:
        json.dump(data, f)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "parts" / "part-keep").mkdir(parents=True)
    for args in (["store", "finalize", "--prune", url], ["store", "ls", url]):
        code, out, err = run_cli(capsys, *args)
        assert code == 2, (args, out, err)
        assert len(err.strip().splitlines()) == 1 and "stream key" in err, err
    # verify lists it among the store's problems (exit 1), as it lists every problem
    code, out, err = run_cli(capsys, "store", "verify", url)
    assert code == 1 and "stream key" in out, (out, err)
    with pytest.raises(UserError, match="stream key"):
        open_store(url).create_stream(StreamInfo(name="enc", dim=DIM, dtype="float32"))
    assert sorted(os.listdir(victim)) == ["parts"]
    assert os.listdir(victim / "parts") == ["part-keep"]
    assert not (tmp_path / "shared" / "victim").exists()


def test_a_manifest_naming_another_part_is_refused(tmp_path):
    url = str(tmp_path / "x.zarr")
    store, info = build(url)
    path = os.path.join(url, "streams", info.key, "manifests", "part-p0.json")
    with open(path) as f:
        data = json.load(f)
    data["part_id"] = "../../../../elsewhere"
    with open(path, "w") as f:
        json.dump(data, f)
    os.remove(os.path.join(url, "streams", info.key, "index.json"))
    with pytest.raises(UserError, match="part id"):
        open_store(url, mode="r").read_clip("enc", "a")
    report = verify(open_store(url, mode="r"))
    assert any("part-p0.json" in p and "part id" in p for p in report.problems), report.problems


def test_a_stream_name_that_climbs_is_refused_at_creation(tmp_path):
    store = open_store(str(tmp_path / "x.zarr"))
    with pytest.raises(UserError, match="stream key"):
        store.create_stream(StreamInfo(name="../../victim", dim=DIM))
    assert not (tmp_path / "victim-").exists() and os.listdir(tmp_path) == ["x.zarr"]


# 6: HDF5 parts whose rows live elsewhere ------------------------------------------------------


def _hostile_h5(kind: str, part: str, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    os.remove(part)
    with h5py.File(part, "w") as f:
        if kind == "external-storage":
            f.create_dataset("rows", shape=(11, DIM), dtype="<f4",
                             external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
        else:
            other = str(tmp_path / "other.h5")
            with h5py.File(other, "w") as o:
                o.create_dataset("rows", data=np.frombuffer(SECRET, "<f4").reshape(11, DIM))
            if kind == "external-link":
                f["rows"] = h5py.ExternalLink(other, "rows")
            else:
                layout = h5py.VirtualLayout(shape=(11, DIM), dtype="<f4")
                layout[:] = h5py.VirtualSource(other, "rows", shape=(11, DIM))
                f.create_virtual_dataset("rows", layout)


@pytest.mark.parametrize("kind", ["external-storage", "external-link", "virtual-dataset"])
def test_hdf5_parts_whose_rows_live_outside_the_file_are_refused(tmp_path, capsys, kind):
    url = str(tmp_path / "x.h5")
    _, info = build(url)
    _hostile_h5(kind, os.path.join(url, "streams", info.key, "parts", "part-p0.h5"), tmp_path)
    report = verify(open_store(url, mode="r"))
    assert any("refusing to read" in p and "part-p0.h5" in p for p in report.problems), \
        report.problems
    out_dir = tmp_path / "export"
    code, out, err = run_cli(capsys, "store", "export", url, "enc", "--out", str(out_dir))
    assert code == 2 and "refusing to read" in err and len(err.strip().splitlines()) == 1, err
    no_secret_in(out_dir)


# 7: zarr chunk files that are links out of the store -----------------------------------------


def test_a_zarr_chunk_linked_out_of_the_store_is_refused(tmp_path, capsys):
    url = str(tmp_path / "x.zarr")
    _, info = build(url)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET.ljust(os.path.getsize(
        os.path.join(url, "streams", info.key, "parts", "part-p0", "c", "0", "0")), b"\0"))
    chunk = os.path.join(url, "streams", info.key, "parts", "part-p0", "c", "0", "0")
    os.remove(chunk)
    os.symlink(secret, chunk)
    report = verify(open_store(url, mode="r"))
    assert any("outside the store" in p for p in report.problems), report.problems
    out_dir = tmp_path / "export"
    code, out, err = run_cli(capsys, "store", "export", url, "enc", "--out", str(out_dir))
    assert code == 2 and "outside the store" in err and len(err.strip().splitlines()) == 1, err
    no_secret_in(out_dir)


def test_a_link_that_stays_inside_the_store_is_read(tmp_path):
    url = str(tmp_path / "x.zarr")
    store, info = build(url)
    chunk = os.path.join(url, "streams", info.key, "parts", "part-p0", "c", "0", "0")
    kept = os.path.join(url, "aux-chunk")
    os.replace(chunk, kept)
    os.symlink(kept, chunk)
    assert open_store(url, mode="r").read_clip("enc", "b").tolist() == [[2.0] * DIM] * 5


# 8: terminal escape sequences are printed escaped ---------------------------------------------

ESCAPE = "\x1b]0;pwned\x07\x1b[2J"


def test_store_text_reaches_the_terminal_escaped(tmp_path, capsys):
    url = str(tmp_path / "x.zarr")
    store, info = build(url, alias=f"enc{ESCAPE}")
    store.add_failures([{"clip_id": f"c{ESCAPE}", "stage": "decode", "stream": info.key,
                         "message": f"bad file {ESCAPE}x.mp4"}])
    store.record_intent(info, ["a", "b", "never-committed"])  # verify names the stream
    for args in (["store", "ls", url], ["store", "ledger", url], ["store", "verify", url],
                 ["store", "info", url, info.key], ["store", "ls", url, "--json"],
                 ["store", "info", url, "nothing" + ESCAPE]):
        code, out, err = run_cli(capsys, *args)
        assert "\x1b" not in out + err and "\x07" not in out + err, args
        assert "\\x1b" in out + err or "\\u001b" in out + err, (args, out, err)
    line = failure_line({"clip_id": "c", "alias": "enc", "message": f"x {ESCAPE}"})
    assert "\x1b" not in line and "\\x1b]0;pwned\\x07" in line
