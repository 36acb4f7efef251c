"""A hostile or careless user's inputs: clip ids that climb out of folders, odd clips files,
stores that cannot be written, and output that scripts read. Each mistake is one `error:` line
with exit code 2, and nothing is written outside the folder the user named.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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


# --- 5: a clip id pointed at other media is not "already done" -------------------------------

def _frames(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(32, 32, 3))
    return np.stack([(base + 3 * k) % 255 for k in range(n)]).astype(np.uint8)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from pipelines.synthetic.av_writer import write_video

    root = tmp_path_factory.mktemp("videos")
    write_video(root / "one.mp4", _frames(12, 0), fps=25)
    write_video(root / "two.mp4", _frames(12, 1), fps=25)
    return root


def extract_args(clips: str, store: str) -> list[str]:
    return ["extract", "--clips", clips, "--store", store, "--encoders", "hsemotion-enet-b0",
            "--weights", "random", "--reduced", "--device", "cpu", "--decode-workers", "0",
            "--dtype", "float32"]


def test_a_clip_redefined_after_extraction_is_refused_not_silently_kept(videos, tmp_path,
                                                                          capsys):
    store = str(tmp_path / "s.zarr")
    clips = write_lines(tmp_path / "clips.jsonl",
                        {"clip_id": "c", "video": str(videos / "one.mp4")},
                        {"clip_id": "d", "video": str(videos / "one.mp4"), "start": 0.0})
    assert run_cli(*extract_args(clips, store), capsys=capsys)[0] == 0
    before = open_store(store, mode="r").read_clip("hsemotion-enet-b0", "c").copy()

    for changed, field in (({"clip_id": "c", "video": str(videos / "two.mp4")}, "source"),
                           ({"clip_id": "c", "video": str(videos / "one.mp4"), "end": 0.2},
                            "end")):
        redefined = write_lines(tmp_path / "again.jsonl", changed)
        code, out, err = run_cli(*extract_args(redefined, store), capsys=capsys)
        assert code == 2 and "skipped" not in out
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "'c'" in errors[0] and field in errors[0]
        assert "Traceback" not in err
    after = open_store(store, mode="r")
    np.testing.assert_array_equal(after.read_clip("hsemotion-enet-b0", "c"), before)
    assert after.clips()[0]["video"] == str(videos / "one.mp4")


def test_a_copied_source_is_the_same_clip_and_a_new_clip_gets_its_record(videos, tmp_path,
                                                                         capsys):
    import shutil

    store = str(tmp_path / "s.zarr")
    clips = write_lines(tmp_path / "clips.jsonl",
                        {"clip_id": "c", "video": str(videos / "one.mp4")})
    assert run_cli(*extract_args(clips, store), capsys=capsys)[0] == 0
    moved = tmp_path / "moved.mp4"
    shutil.copy(videos / "one.mp4", moved)  # new path, new mtime, same bytes
    again = write_lines(tmp_path / "moved.jsonl", {"clip_id": "c", "video": str(moved)})
    code, out, _ = run_cli(*extract_args(again, store), capsys=capsys)
    assert code == 0 and "skipped" in out
    assert open_store(store, mode="r").clips()[0]["video"] == str(moved)


def test_an_encoder_version_bump_is_not_answered_by_the_warm_rerun(videos, tmp_path, capsys,
                                                                    monkeypatch):
    import extract.versions

    store = str(tmp_path / "s.zarr")
    clips = write_lines(tmp_path / "clips.jsonl",
                        {"clip_id": "c", "video": str(videos / "one.mp4")})
    assert run_cli(*extract_args(clips, store), capsys=capsys)[0] == 0
    code, out, _ = run_cli(*extract_args(clips, store), capsys=capsys)
    assert code == 0 and "1 skipped" in out  # the warm rerun, from metadata
    # A change to an encoder's output, released with a bumped encoders version:
    monkeypatch.setattr(extract.versions, "ENCODERS_VERSION", "encoders-bumped")
    code, out, _ = run_cli(*extract_args(clips, store), capsys=capsys)
    assert code == 0 and "1 done, 0 skipped" in out
    streams = open_store(store, mode="r").streams()
    assert len(streams) == 2  # re-extracted as a new stream; the old one stays


# --- 10: clips files as editors save them, odd fields ------------------------------------------

@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_clips_files_saved_with_a_bom_or_as_utf16_are_read(tmp_path, encoding):
    text = json.dumps({"clip_id": "café/1", "video": "a.mp4"}, ensure_ascii=False) + "\r\n"
    path = tmp_path / "clips.jsonl"
    path.write_bytes(text.encode(encoding))
    assert [c["clip_id"] for c in read_clips_file(str(path))] == ["café/1"]


def test_a_clips_file_in_another_encoding_is_one_line(tmp_path):
    path = tmp_path / "clips.jsonl"
    path.write_bytes(b'{"clip_id": "caf\xe9", "video": "a.mp4"}\n')  # Latin-1, no BOM
    with pytest.raises(UserError, match=r"clips.jsonl:1: not utf-8 text"):
        read_clips_file(str(path))


@pytest.mark.parametrize("fields, named", [
    ({"start": True}, "'start' must be a number"),
    ({"start": -1.0}, "'start' is -1 s"),
    ({"fps": 0}, "'fps' is 0"),
    ({"start": 2.0, "end": 1.0}, "'end' (1 s) must be after 'start' (2 s)"),
    ({"end": float("nan")}, "'end' must be a number"),
    ({"video": ["x"]}, "'video' must be a string"),
])
def test_odd_clip_fields_are_one_line_naming_clip_and_field(tmp_path, fields, named):
    clips = write_lines(tmp_path / "clips.jsonl", {"clip_id": "ok", "video": "a.mp4"},
                        {"clip_id": "odd", "video": "a.mp4", **fields})
    with pytest.raises(UserError) as refused:
        read_clips_file(clips)
    assert str(refused.value).startswith(f"{clips}:2: clip 'odd': ")
    assert named in str(refused.value)


# --- 10: stores that cannot be written ----------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real, tiny file system (tmpfs), so a full disk and a read-only store are the kernel's
    own errors. Needs root (CI runs as root); skipped elsewhere."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()

    def mounted(size: str):
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                 str(mount)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        return mount

    yield mounted
    subprocess.run(["umount", str(mount)], capture_output=True)


def _remount_read_only(mount) -> None:
    import subprocess

    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)


def test_a_read_only_store_is_one_line_for_finalize_import_and_extract(small_disk, tmp_path,
                                                                       capsys):
    disk = small_disk("16m")
    store = small_store(str(disk / "s.zarr"), ["a", "b"])
    folder = tmp_path / "features"
    folder.mkdir()
    np.save(folder / "c.npy", np.zeros((3, 4), np.float32))
    text = write_lines(tmp_path / "clips.jsonl", {"clip_id": "t", "text": "hello"})
    _remount_read_only(disk)
    for args in (["store", "finalize", store.url],
                 ["store", "import", str(folder), "--store", store.url, "--stream", "x"],
                 ["extract", "--clips", text, "--store", store.url, "--encoders", "minilm-l6",
                  "--weights", "random", "--reduced", "--device", "cpu"]):
        code, _, err = run_cli(*args, capsys=capsys)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "read-only" in errors[0], args
        assert "Traceback" not in err and ".tmp-" not in errors[0]
    assert open_store(store.url, mode="r").clip_ids() == ["a", "b"]


def test_a_full_disk_is_one_line_and_keeps_what_was_committed(small_disk, tmp_path, capsys):
    from features_store import verify

    disk = small_disk("3m")
    store = small_store(str(disk / "s.zarr"), ["a"])
    folder = tmp_path / "features"
    folder.mkdir()
    for i in range(8):
        np.save(folder / f"c{i}.npy", np.random.default_rng(i).random((2000, 64), np.float32))
    code, _, err = run_cli("store", "import", str(folder), "--store", store.url,
                           "--stream", "big", "--frame-shift", "0.04", capsys=capsys)
    assert code == 2 and err.startswith("error:") and "disk is full" in err
    assert len(err.strip().splitlines()) == 1
    after = open_store(store.url, mode="r")
    assert verify(after).ok
    assert after.read_clip("clip-vit-b16", "a").shape == (3, 4)
    assert not [p for p in disk.rglob("*") if ".tmp-" in p.name]


# --- 10: training settings out of range ---------------------------------------------------------

@pytest.mark.parametrize("setting, named", [("batch_size=0", "batch_size=0: must be at least 1"),
                                            ("lr=-1", "lr=-1.0: must be a learning rate"),
                                            ("epochs=0", "epochs=0: must be at least 1"),
                                            ("lr=nan", "lr=nan")])
def test_training_settings_out_of_range_are_one_line_before_anything_runs(tmp_path, capsys,
                                                                          setting, named):
    run = tmp_path / "run"
    # a store folder that exists: `train` checks that before importing the heads, so the
    # setting is what is left to refuse
    (tmp_path / "store.zarr").mkdir()
    code, _, err = run_cli("train", "--head", "transformer-lstm", "--store",
                           str(tmp_path / "store.zarr"), "--out", str(run), "--set", setting,
                           capsys=capsys)
    assert code == 2 and err.startswith(f"error: {named}") and len(err.splitlines()) == 1
    assert not run.exists()


def test_every_heads_paper_defaults_are_in_range():
    from heads.base import check_config
    from heads.registry import get_head, list_heads

    for name in list_heads():
        check_config(get_head(name).config_cls())


# --- 10: clips too short for the REACT metrics are refused before any training -----------------

def test_demo_with_clips_too_short_for_tlcc_refuses_before_doing_anything(tmp_path, capsys):
    code, _, err = run_cli("demo", "--seconds", "2", "--out", str(tmp_path / "demo"),
                           capsys=capsys)
    assert code == 2 and err.startswith("error: --seconds 2:") and "TLCC" in err
    assert not (tmp_path / "demo").exists()


def test_regnn_refuses_validation_clips_too_short_for_tlcc_before_training(tmp_path):
    from test_regnn import tiny_config, toy_react_store

    from heads.registry import get_head

    store = toy_react_store(str(tmp_path / "short.zarr"), {"train": 2, "val": 2}, frames=40)
    head = get_head("regnn")(tiny_config(out_dim=25, top_k=3, batch_size=4))
    with pytest.raises(UserError, match="split 'val' has clips of 40 frames; REACT's TLCC"):
        head.build_data(store)


def test_store_import_of_two_files_for_one_clip_is_one_line_and_leaves_no_stream(tmp_path,
                                                                                 capsys):
    store = small_store(str(tmp_path / "s.zarr"), ["a"])
    folder = tmp_path / "features"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((3, 4), np.float32))
    import torch

    torch.save(torch.zeros(3, 4), folder / "a.pth")
    code, _, err = run_cli("store", "import", str(folder), "--store", store.url, "--stream", "x",
                           capsys=capsys)
    assert code == 2 and "clip 'a' is also in" in err and len(err.splitlines()) == 1
    assert [s.alias for s in open_store(store.url, mode="r").streams()] == ["clip-vit-b16"]


# --- 12: --json means stdout is one JSON document ------------------------------------------------

def _json_commands() -> set[str]:
    """Every command path that has a --json option."""
    import click

    from pipelines.cli import cli

    found = set()

    def walk(command, path):
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name])
        elif any("--json" in p.opts for p in command.params):
            found.add(" ".join(path))

    walk(cli, [])
    return found


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from test_trainer import TinyHead, build_tiny_store, tiny

    from heads.registry import register_head
    from heads.trainer import train

    @register_head
    class TinyEnsembleHead(TinyHead):
        name = "tiny-ensemble-head"

        def ensemble(self, predictions):
            return np.mean(predictions, axis=0)

        def export(self, predictions, data, split, out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
            np.save(out_dir / f"{split}.npy", predictions)
            return [out_dir / f"{split}.npy"]

    root = tmp_path_factory.mktemp("runs")
    store = build_tiny_store(root / "tiny.zarr")
    runs = []
    for seed in (0, 1):
        head = TinyEnsembleHead(tiny(epochs=1, seed=seed).config)
        train(head, store, root / f"run{seed}", device="cpu", progress=False)
        runs.append(str(root / f"run{seed}"))
    return store, runs, root


def test_every_json_option_prints_only_json(two_runs, tmp_path, capsys):
    store, runs, root = two_runs
    invocations = {
        "store ls": ["store", "ls", store, "--json"],
        "store info": ["store", "info", store, "tiny-x", "--json"],
        "store ledger": ["store", "ledger", store, "--json"],
        "encoders ls": ["encoders", "ls", "--json"],
        "heads ls": ["heads", "ls", "--json"],
        "datasets ls": ["datasets", "ls", "--json"],
        "runs ls": ["runs", "ls", str(root), "--json"],
        "evaluate": ["evaluate", "--run", runs[0], "--json", "--device", "cpu"],
        "ensemble": ["ensemble", "--runs", ",".join(runs), "--split", "val", "--export",
                     str(tmp_path / "ens"), "--json", "--device", "cpu"],
        "runs diff": ["runs", "diff", runs[0], runs[1], "--json"],
        "train": ["train", "--head", "tiny-ensemble-head", "--store", store, "--out",
                  str(tmp_path / "json-run"), "--epochs", "1", "--device", "cpu", "--json"],
    }
    # `metrics react` needs a REACT tree; its --json path is covered in test_react_metrics.
    assert _json_commands() - {"metrics react"} == set(invocations)
    for name, args in invocations.items():
        code, out, _ = run_cli(*args, capsys=capsys)
        assert code == 0, name
        json.loads(out)  # nothing but the document


# --- 16: help without torch ----------------------------------------------------------------------

def _fresh_python(code: str) -> tuple[str, float]:
    import subprocess
    import sys
    import time

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()}, check=True)
    return result.stdout.strip(), time.perf_counter() - started


HEAVY = ("torch", "zarr", "h5py", "timm", "transformers", "open_clip", "av", "numpy")


def test_affect_help_imports_no_model_or_array_library():
    code = ("import sys\nfrom pipelines.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out, seconds = _fresh_python(code)
    assert out.splitlines()[-1] == "loaded:"  # none of them
    assert "Commands:" in out and "extract" in out
    assert seconds < 10  # about 0.25 s on the 2-core CI machine (BENCHMARKS.md); generous


def test_the_help_lines_listed_without_imports_are_the_commands_own():
    import click

    from pipelines.cli import COMMANDS, cli

    ctx = click.Context(cli)
    for _, name, listed in COMMANDS:
        own = cli.get_command(ctx, name).get_short_help_str(limit=500)
        assert listed == own, name


# --- 17 and 7: tables that line up, and one name per stream ------------------------------------

def test_tables_align_long_names_print_counts_as_ints_and_say_1_clip():
    from features_store.tables import format_table, plural

    table = format_table([{"alias": "swin-t@random@reduced-and-then-some", "clips": 1,
                           "speakers": 2, "FRC": 0.123456},
                          {"alias": "v", "clips": 12, "speakers": 10, "FRC": 1.5}],
                         ["alias", "clips", "speakers", "FRC"])
    header, first, second = table.splitlines()
    assert len({line.index("clips") + 5 for line in [header]} |
               {first.index(" 1 ") + 2, second.index("12") + 2}) == 1  # right edges agree
    assert "2.0000" not in table and " 2 " in first and "0.1235" in first
    assert plural(1, "clip") == "1 clip" and plural(2, "clip") == "2 clips"


def test_store_ls_gives_every_stream_a_unique_name_to_use(tmp_path, capsys):
    store = open_store(str(tmp_path / "s.zarr"))
    store.add_clips({"clip_id": c, "split": "train"} for c in ("a", "b", "c"))
    infos = []
    for clips, seed in ((["a"], 1), (["a", "b", "c"], 2)):  # a --limit 1 run, then a full one
        info = store.create_stream(StreamInfo(name="swin-t", alias="swin-t@random@reduced",
                                              dim=2, frame_shift_s=0.04,
                                              preprocessing={"run": seed}))
        with store.part_writer(info, "p0") as writer:
            for c in clips:
                writer.write_clip(c, np.zeros((2, 2), np.float32))
        infos.append(info)
    store.finalize()
    code, out, _ = run_cli("store", "ls", store.url, "--json", capsys=capsys)
    rows = json.loads(out)
    assert len({r["stream"] for r in rows}) == 2
    newest = store.resolve("swin-t@random@reduced")
    assert {r["stream"] for r in rows} == {"swin-t@random@reduced",
                                        next(i.key for i in infos if i.key != newest.key)}
    code, out, _ = run_cli("store", "ls", store.url, capsys=capsys)
    assert "3 clips in the clip table" in out
    lines = out.splitlines()
    assert len({line.index(" float32") for line in lines[1:3]}) == 1  # columns line up


def test_a_head_refuses_a_partial_stream_and_names_the_complete_one(tmp_path):
    from test_trainer import build_tiny_store, tiny

    from heads.trainer import train

    url = build_tiny_store(tmp_path / "tiny.zarr")
    store = open_store(url)
    full = store.resolve("tiny-x")
    partial = store.create_stream(StreamInfo(name="tiny-x", dim=6, frame_shift_s=0.1,
                                             preprocessing={"limit": 2},
                                             created="2999-01-01T00:00:00+00:00"))
    with store.part_writer(partial, "p0") as writer:  # a later `--limit 2` run: newest
        for clip_id in ("c00", "c01"):
            writer.write_clip(clip_id, np.zeros((5, 6), np.float32))
    store.finalize()
    assert store.resolve("tiny-x").key == partial.key
    with pytest.raises(UserError) as refused:
        train(tiny(epochs=1), url, tmp_path / "run", device="cpu", progress=False)
    assert f"resolves to {partial.key}, which has 2 of the 8 clips of split 'train'" in str(
        refused.value)
    assert full.key in str(refused.value)


# --- 13: the failure ledger says what is failing now ---------------------------------------------

def test_the_ledger_keeps_one_current_entry_per_clip_and_stream_and_forgets_successes(
        videos, tmp_path, capsys):
    import shutil

    store = str(tmp_path / "s.zarr")
    late = tmp_path / "late.mp4"  # arrives after the first two runs
    clips = write_lines(tmp_path / "clips.jsonl",
                        {"clip_id": "good", "video": str(videos / "one.mp4")},
                        {"clip_id": "late", "video": str(late)})
    for _ in range(2):
        run_cli(*extract_args(clips, store), capsys=capsys)
    s = open_store(store, mode="r")
    assert [(f["clip_id"], f["stage"]) for f in s.failures()] == [("late", "open")]
    entry = s.failures()[0]
    assert entry.get("stream_key", entry["stream"]) == s.resolve("hsemotion-enet-b0").key
    assert len(s.failures(history=True)) == 2

    shutil.copy(videos / "two.mp4", late)
    code, out, _ = run_cli(*extract_args(clips, store), capsys=capsys)
    assert code == 0 and "1 done" in out
    s = open_store(store, mode="r")
    assert s.failures() == [] and len(s.failures(history=True)) == 2
    code, out, _ = run_cli("store", "ledger", store, capsys=capsys)
    assert out.strip() == "0 failures"


# --- 18: a second dataset in a store only on purpose ----------------------------------------------

def test_ingesting_a_second_dataset_needs_add_dataset(tmp_path, capsys):
    from pipelines.samples import generate_sample

    generate_sample("cremad", tmp_path / "crema", clips=4, seconds=0.5, seed=1, size=32)
    generate_sample("meld", tmp_path / "meld", clips=4, seconds=0.5, seed=1, size=32)
    store = str(tmp_path / "s.zarr")
    ingest = ["ingest", "--store", store, "--dataset"]
    assert run_cli(*ingest, "cremad", "--data-root", str(tmp_path / "crema"),
                   capsys=capsys)[0] == 0
    before = open_store(store, mode="r").clip_ids()
    code, _, err = run_cli(*ingest, "meld", "--data-root", str(tmp_path / "meld"), capsys=capsys)
    assert code == 2 and "is a cremad store" in err and "--add-dataset" in err
    assert len(err.splitlines()) == 1
    assert open_store(store, mode="r").clip_ids() == before
    assert run_cli(*ingest, "meld", "--data-root", str(tmp_path / "meld"), "--add-dataset",
                   capsys=capsys)[0] == 0
    assert len(open_store(store, mode="r").clip_ids()) > len(before)
    # Once added, a rerun (or `extract --dataset meld`) is not refused again.
    assert run_cli(*ingest, "meld", "--data-root", str(tmp_path / "meld"), capsys=capsys)[0] == 0


def test_split_named_exports_refuse_a_split_that_climbs_out(tmp_path):
    from types import SimpleNamespace

    from heads.registry import get_head

    for name in ("trm", "temporal_attention"):
        head = get_head(name)()
        stub = SimpleNamespace(clips=lambda split: [], classes=[])
        with pytest.raises(UserError, match="'..'"):
            head.export({}, stub, "../../escaped", tmp_path / "out")
    assert not (tmp_path.parent / "escaped_va.csv").exists()


def test_encoders_ls_imports_no_model_library():
    code = ("import sys\nfrom pipelines.cli import main\ntry:\n    main(['encoders', 'ls'])\n"
            "except SystemExit:\n    pass\n"
            f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out, _ = _fresh_python(code)
    assert "minilm-l6" in out and out.splitlines()[-1] == "loaded:"


def test_each_family_builds_exactly_what_the_torch_free_catalog_lists():
    import importlib

    from extract.encoders.specs import CATALOG

    for entry in CATALOG:
        family = importlib.import_module(f"extract.encoders.{entry.family}")
        built = {r.spec.name: r for r in family.REGISTRATIONS}
        registration = built[entry.spec.name]
        assert registration.spec is entry.spec and dict(registration.options) == dict(
            entry.options) and registration.available is entry.available, entry.spec.name
    families = {e.family for e in CATALOG}
    assert sum(len(importlib.import_module(f"extract.encoders.{f}").REGISTRATIONS)
               for f in families) == len(CATALOG)


@pytest.mark.parametrize("env", [{"TORCH_HOME": "/tmp/th"}, {"XDG_CACHE_HOME": "/tmp/xdg"}, {}])
def test_the_torch_free_hub_folder_is_torchs(monkeypatch, env):
    import torch

    from extract.encoders.specs import torch_hub_dir_from_env

    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert torch_hub_dir_from_env() == Path(torch.hub.get_dir())


def test_a_store_that_is_a_file_and_an_unknown_device_are_one_line(tmp_path, capsys):
    text = write_lines(tmp_path / "clips.jsonl", {"clip_id": "t", "text": "hello"})
    afile = tmp_path / "notes.txt"
    afile.write_text("not a store")
    base = ["extract", "--clips", text, "--encoders", "minilm-l6", "--weights", "random",
            "--reduced"]
    for extra, expected in ((["--store", str(afile)], "is a file, not a feature store"),
                            (["--store", str(tmp_path / "s.zarr"), "--device", "tpu"],
                             "--device tpu: not a torch device")):
        code, _, err = run_cli(*base, *extra, capsys=capsys)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and expected in errors[0]
        assert "Traceback" not in err
    code, _, err = run_cli("store", "ls", str(afile), capsys=capsys)
    assert code == 2 and "is a file" in err
    assert afile.read_text() == "not a store"
