"""Fuzzing the inputs users hand to `affect`: clips files, label files, `--set` values, and the
store's own metadata (a store from elsewhere is input too), with special files among them.

Seeded (AFFECT_FUZZ_SEED, default 17; AFFECT_FUZZ_CASES scales the count), a few hundred mutated
inputs per run. For every case:
- no Python traceback: each command ends in exit 0, 1 (verify's "problems") or 2 with one
  `error:` line;
- no hang: each command finishes within its time limit;
- nothing is written outside the folders the command was given, and nothing outside the store
  is read: a secret file that planted links point at never shows up in any output or file;
- no partial write is visible: no temporary file is left in view, and every clip a committed
  manifest lists reads back whole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from features_store import StreamInfo, open_store
from pipelines.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400),
              pytest.mark.usefixtures("one_torch_thread")]

SEED = int(os.environ.get("AFFECT_FUZZ_SEED", "17"))
SCALE = float(os.environ.get("AFFECT_FUZZ_CASES", "1"))
SECRET = "fuzz-secret-3f9c1d"  # the content of a file outside every store
TIME_LIMIT_S = 300.0  # generous: CI machines are shared; a hang never ends

STRANGE_VALUES = [None, True, False, 0, -1, 1, 2**31, 10**400, -10**400, 1e308, -1e-300,
                  float("nan"), float("inf"), "", " ", "x" * 5000, "../../escape", "/etc/passwd",
                  "\x1b[31mred", "a\x00b", [], [1, 2, 3, 4], {}, {"a": {"b": [None]}},
                  [[[[[]]]]], "NaN", "1e999", -0.0, 3.5]


def strange(rng: random.Random):
    value = rng.choice(STRANGE_VALUES)
    if rng.random() < 0.05:
        value = json.loads("[" * 300 + "]" * 300)  # nesting (deeper still: see mutate_text)
    return value


def run(args: list[str], capsys) -> tuple[int, str]:
    """`affect ARGS` in a thread with a time limit: (exit code, everything printed)."""
    outcome: dict = {}

    def target():
        try:
            main(args)
            outcome["code"] = 0
        except SystemExit as ended:
            outcome["code"] = int(ended.code or 0)
        except BaseException as exc:  # noqa: BLE001 - a traceback is the finding
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIME_LIMIT_S)
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert not thread.is_alive(), f"hang: affect {' '.join(args)[:300]}"
    if "error" in outcome:
        raise AssertionError(f"traceback from affect {' '.join(args)[:300]}: "
                             f"{type(outcome['error']).__name__}: {outcome['error']}")
    code = outcome["code"]
    assert code in (0, 1, 2), (args, code, printed[-2000:])
    assert "Traceback" not in printed, printed[-2000:]
    if code == 2:
        errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, captured.err[-2000:]
    return code, printed


def files_under(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            out[str(path.relative_to(root))] = path.read_bytes()
        except OSError:
            continue
    return out


def check_no_secret(printed: str, *roots: Path) -> None:
    assert SECRET not in printed
    for root in roots:
        if root.exists():
            for name, data in files_under(root).items():
                assert SECRET.encode() not in data, f"{root / name} holds bytes read outside"


def check_committed_reads_whole(url: str) -> None:
    """Every clip of every committed manifest reads back with its rows; nothing temporary is in
    view. A store the case tampered with may refuse to open: then there is nothing to read."""
    try:
        store = open_store(url, "r")
        infos = store.streams()
    except Exception:  # noqa: BLE001 - a refusal is fine here; the CLI checks cover messages
        return
    root = Path(store.path)
    leftovers = [p for p in root.rglob("*.tmp-*")]
    assert not leftovers, leftovers
    for info in infos:
        try:
            manifests = store.manifests(info)
        except Exception:  # noqa: BLE001 - a tampered manifest is refused, not read
            continue
        for manifest in manifests:
            for entry in manifest.clips:
                try:
                    rows = store.read_clip(info, entry.clip_id)
                except Exception:  # noqa: BLE001 - tampered data is refused by the reader
                    continue
                if rows.shape[0] != entry.n_rows and entry.clip_id in store.index(info):
                    index = store.index(info)
                    assert rows.shape[0] == index.n_rows[index.position[entry.clip_id]]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Media, a finalized store, a secret outside everything, and special files."""
    from PIL import Image

    from pipelines.samples import generate_sample
    from pipelines.synthetic.av_writer import write_video

    root = tmp_path_factory.mktemp("fuzz")
    secret = root / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    media = root / "media"
    media.mkdir()
    rng = np.random.default_rng(0)
    write_video(media / "v.mp4", rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8), fps=25)
    (media / "frames").mkdir()
    for n in (1, 2, 3):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            media / "frames" / f"{n}.png")
    os.mkfifo(media / "fifo.mp4")
    os.symlink(secret, media / "link.mp4")
    os.symlink("/dev/zero", media / "zero.mp4")
    labels = generate_sample("affwild2", root / "affwild2", clips=4, seconds=1.0, seed=0)
    store = root / "base.zarr"
    s = open_store(str(store), dataset="toy")
    s.add_clips({"clip_id": c, "split": "train"} for c in ("a", "b/c", "d"))
    info = s.create_stream(StreamInfo(name="video", alias="clip-vit-b16", dim=4,
                                      frame_shift_s=0.04, claims={"all": True}))
    for p, clips in enumerate((("a", "b/c"), ("d",))):
        with s.part_writer(info, f"p{p}") as writer:
            for clip_id in clips:
                writer.write_clip(clip_id, rng.normal(size=(3, 4)).astype(np.float32))
    s.record_intent(info, ["a", "b/c", "d"])
    s.add_failures([{"clip_id": "x", "stage": "decode", "message": "m"}])
    s.finalize()
    return {"root": root, "secret": secret, "media": media, "store": store,
            "labels": Path(labels.root)}


def mutate_text(text: str, rng: random.Random) -> str:
    data = bytearray(text.encode())
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        i = rng.randrange(len(data))
        how = rng.random()
        if how < 0.3:
            data[i] ^= 1 << rng.randrange(8)
        elif how < 0.5:
            del data[i:i + rng.randint(1, 8)]
        elif how < 0.7:
            data[i:i] = rng.choice([b"\xff\xfe", b"\x00", b"{", b"]", b"\n", b",", b"1e999",
                                    b'"', b"\x1b[2J", b"[" * 100_000])
        else:
            data = data[:i]  # truncated
    return data.decode("utf-8", errors="replace") if rng.random() < 0.5 else data.decode(
        "latin-1")


def mutate_json(value, rng: random.Random):
    """Replace, delete or retype one field somewhere in a JSON document."""
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value))
        choice = rng.random()
        if choice < 0.2:
            return {k: v for k, v in value.items() if k != key}
        if choice < 0.6 or not isinstance(value[key], dict | list):
            return {**value, key: strange(rng)}
        return {**value, key: mutate_json(value[key], rng)}
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        copy = list(value)
        copy[i] = mutate_json(copy[i], rng) if rng.random() < 0.5 else strange(rng)
        return copy
    return strange(rng)


# --- clips files -------------------------------------------------------------------------------

def clip_records(media: Path) -> list[dict]:
    return [
        {"clip_id": "v/one", "video": str(media / "v.mp4"), "start": 0.0, "end": 0.2,
         "split": "train", "speaker": "s1"},
        {"clip_id": "f/two", "frames": str(media / "frames"), "fps": 25,
         "boxes": {"face": {"1.png": [0, 0, 8, 8]}, "body": [0, 0, 16, 16]}},
        {"clip_id": "t/three", "text": "hello there", "split": "val"},
    ]


SPECIAL_SOURCES = ["fifo.mp4", "link.mp4", "zero.mp4", "frames", "missing.mp4", "/dev/null"]


def test_fuzzed_clips_files(world, tmp_path, capsys):
    rng = random.Random(SEED)
    cases = int(40 * SCALE)
    for case in range(cases):
        box = tmp_path / f"clips-{case}"
        box.mkdir()
        records = clip_records(world["media"])
        how = rng.random()
        if how < 0.45:
            i = rng.randrange(len(records))
            records[i] = mutate_json(records[i], rng)
            text = "".join(json.dumps(r) + "\n" for r in records)
        elif how < 0.7:
            text = mutate_text("".join(json.dumps(r) + "\n" for r in records), rng)
        else:
            i = rng.randrange(len(records))
            special = rng.choice(SPECIAL_SOURCES)
            field = rng.choice(["video", "frames", "audio"])
            records[i] = {**records[i], field: str(world["media"] / special)
                          if not special.startswith("/") else special}
            text = "".join(json.dumps(r) + "\n" for r in records)
        clips = box / "clips.jsonl"
        clips.write_text(text, errors="surrogateescape")
        store = box / "s.zarr"
        before = files_under(world["root"] / "outside")
        code, printed = run(["extract", "--clips", str(clips), "--store", str(store),
                             "--encoders", "hsemotion-enet-b0,minilm-l6", "--weights", "random",
                             "--reduced", "--device", "cpu", "--decode-workers", "0",
                             "--batch-size", "8"], capsys)
        check_no_secret(printed, store)
        assert files_under(world["root"] / "outside") == before
        assert sorted(p.name for p in box.iterdir()) in (["clips.jsonl"],
                                                         ["clips.jsonl", "s.zarr"])
        check_committed_reads_whole(str(store))


# --- label files ---------------------------------------------------------------------------

def test_fuzzed_label_files(world, tmp_path, capsys):
    rng = random.Random(SEED + 1)
    cases = int(40 * SCALE)
    for case in range(cases):
        data = tmp_path / f"labels-{case}"
        shutil.copytree(world["labels"], data, symlinks=True)
        files = sorted((data / "Annotations").rglob("*.txt"))
        target = rng.choice(files)
        how = rng.random()
        if how < 0.6:
            target.write_text(mutate_text(target.read_text(), rng), errors="surrogateescape")
        elif how < 0.75:
            target.unlink()
            os.mkfifo(target)
        elif how < 0.9:
            target.unlink()
            os.symlink(world["secret"], target)
        else:
            target.write_text("")
        store = tmp_path / f"labels-{case}.zarr"
        code, printed = run(["ingest", "--dataset", "affwild2", "--data-root", str(data),
                             "--store", str(store)], capsys)
        check_no_secret(printed, store)
        check_committed_reads_whole(str(store))


# --- --set values --------------------------------------------------------------------------

SET_TEXTS = ["0", "-1", "1", "1e308", "-1e308", "nan", "inf", "-inf", "", "none", "true",
             "2,3", "0.5,0.5", "1,2,3", "abc", "9" * 40, "1e-300", "0.9999999", "-0", "3.5",
             "x" * 300, "\x1b[31m", "1,,2", "256", "65537"]


def test_fuzzed_set_values(world, tmp_path, capsys):
    import dataclasses

    from features_store.errors import UserError
    from heads.base import apply_overrides
    from heads.registry import get_head, list_heads
    from pipelines.synthetic.feature_stores import cremad_like_store

    rng = random.Random(SEED + 2)
    heads = sorted(list_heads())
    cases = int(120 * SCALE)
    for _ in range(cases):
        cls = get_head(rng.choice(heads))
        config = cls.config_cls()
        name = rng.choice([f.name for f in dataclasses.fields(config)])
        text = rng.choice(SET_TEXTS)
        try:
            apply_overrides(config, [f"{name}={text}"])
        except UserError as refused:
            assert "\n" not in str(refused)
    # A few through a real training run: accepted values must train or fail in one line.
    store = cremad_like_store(tmp_path / "trm.zarr", 24, frames=5, actors=12,
                              dims={"dasheng-base": 4, "hsemotion-enet-b0": 6,
                                    "embeddinggemma": 3})
    fields = ["hidden", "heads", "layers", "h_cycles", "l_cycles", "expansion", "rms_eps",
              "mse_weight", "lr", "betas", "seed", "batch_size", "max_frames", "video", "audio",
              "grad_clip", "weight_decay", "plateau_patience"]
    for case in range(int(20 * SCALE)):
        setting = f"{rng.choice(fields)}={rng.choice(SET_TEXTS)}"
        out = tmp_path / f"run-{case}"
        run(["train", "--head", "trm", "--store", store, "--out", str(out), "--epochs", "1",
             "--quiet", "--device", "cpu", "--set", "hidden=16", "--set", "heads=2",
             "--set", "batch_size=8", "--set", setting], capsys)


# --- store metadata ----------------------------------------------------------------------------

def metadata_files(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*") if p.is_file() and (
        p.suffix == ".json" or p.name == "zarr.json") and ".tmp-" not in p.name)


def test_fuzzed_store_metadata(world, tmp_path, capsys):
    rng = random.Random(SEED + 3)
    cases = int(120 * SCALE)
    for case in range(cases):
        box = tmp_path / f"meta-{case}"
        box.mkdir()
        store = box / "s.zarr"
        shutil.copytree(world["store"], store)
        target = rng.choice(metadata_files(store))
        how = rng.random()
        if how < 0.5:
            try:
                document = json.loads(target.read_text())
                target.write_text(json.dumps(mutate_json(document, rng)))
            except ValueError:
                target.write_text("{")
        elif how < 0.65:
            target.write_text(mutate_text(target.read_text(), rng), errors="surrogateescape")
        elif how < 0.75:
            target.unlink()
        elif how < 0.83:
            target.unlink()
            os.mkfifo(target)
        elif how < 0.91:
            target.unlink()
            os.symlink(world["secret"] if rng.random() < 0.5 else "/dev/zero", target)
        else:
            target.unlink()
            target.mkdir()
        before = files_under(world["root"] / "outside")
        listing = sorted(p.name for p in box.iterdir())
        out = box / "out"
        printed = ""
        for args in (["store", "verify", str(store)], ["store", "verify", "--no-values",
                                                          str(store)],
                     ["store", "ls", str(store)], ["store", "ledger", str(store)],
                     ["store", "export", str(store), "clip-vit-b16", "--out", str(out)],
                     ["store", "finalize", str(store)]):
            _, text = run(args, capsys)
            printed += text
        check_no_secret(printed, store, out)
        assert files_under(world["root"] / "outside") == before
        assert sorted(p.name for p in box.iterdir() if p.name != "out") == listing
        check_committed_reads_whole(str(store))
