"""One stream key, one set of numbers (issue 17, items 3-4): a clip's rows under a key are
bit-equal whatever the process's torch thread count, the task boundaries, a resume's leftovers
and the neighbours in a batch; and `affect store verify --numerics` lists a stream whose parts
were computed by different numerics (library versions the key leaves out).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extract.numerics import fixed_threads, padded_to
from extract.runner import ExtractOptions, get_encoder, run_extraction
from features_store import StreamInfo, open_store
from pipelines.cli import main
from pipelines.synthetic.av_writer import write_video

VIDEO = "clip-vit-b16"
AUDIO = "wav2vec2-base"


def _frames(n: int, seed: int, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(size, size, 3))
    return np.stack([(base + 3 * k) % 255 for k in range(n)]).astype(np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("numerics-media")
    out = []
    for i, n in enumerate((13, 9, 11)):  # frame counts that never fill a batch of 8 evenly
        t = np.arange(int(n / 25 * 16000)) / 16000
        tone = (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32)
        write_video(root / f"v{i}.mp4", _frames(n, i), fps=25, audio=tone)
        out.append({"clip_id": f"c{i}", "video": str(root / f"v{i}.mp4")})
    return out


def _options(**kw) -> ExtractOptions:
    base = dict(encoders=[VIDEO, AUDIO], weights="random", reduced=True, device="cpu",
                batch_size=8, clips_per_part=32, decode_workers=1, dtype="float32")
    return ExtractOptions(**{**base, **kw})


def _extract(clips, url: str, process_threads: int, **kw):
    """An extraction in a process whose torch runs `process_threads` threads (a plain run on
    two cores, a dask worker on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(process_threads)
    try:
        run_extraction(clips, open_store(url), _options(**kw), progress=False)
    finally:
        torch.set_num_threads(before)
    return open_store(url, mode="r")


def test_a_stream_key_holds_one_set_of_numbers_whatever_ran_it(clips, tmp_path):
    # A plain run on two cores, all clips in one task.
    quiet = _extract(clips, str(tmp_path / "quiet.zarr"), process_threads=2)
    # A run that extracted one clip, then a resume on one core (a dask worker's share) with one
    # clip per task: other task boundaries, other neighbours, tail batches everywhere.
    resumed_url = str(tmp_path / "resumed.zarr")
    _extract(clips[1:2], resumed_url, process_threads=2)
    resumed = _extract(clips, resumed_url, process_threads=1, clips_per_part=1)
    keys = {s.key for s in quiet.streams()}
    assert len(keys) == 2 and {s.key for s in resumed.streams()} == keys
    for key in keys:
        for clip in clips:
            mine, theirs = resumed.read_clip(key, clip["clip_id"]), quiet.read_clip(
                key, clip["clip_id"])
            assert mine.shape == theirs.shape and mine.shape[0] > 0
            assert np.array_equal(mine, theirs), (key, clip["clip_id"])


def test_a_frames_rows_do_not_depend_on_its_neighbours_at_a_fixed_batch_shape():
    encoder = get_encoder(VIDEO, _options(), "cpu")
    frames = encoder.preprocess(_frames(11, 5))
    others = encoder.preprocess(_frames(8, 6))
    with torch.inference_mode(), fixed_threads("cpu", 1):
        alone = encoder.encode_batch(padded_to(frames[:3], 8))[:3]
        after = encoder.encode_batch(torch.cat([others[:5], frames[:3]]))[5:]
        first = encoder.encode_batch(torch.cat([frames[:3], others[3:8]]))[:3]
    assert torch.equal(alone, after) and torch.equal(alone, first)


def test_threads_and_batch_size_are_part_of_the_key(clips, tmp_path):
    store = open_store(str(tmp_path / "x.zarr"))
    run_extraction(clips[:1], store, _options(encoders=[VIDEO]), progress=False)
    run_extraction(clips[:1], store, _options(encoders=[VIDEO], threads=2), progress=False)
    run_extraction(clips[:1], store, _options(encoders=[VIDEO], batch_size=4), progress=False)
    infos = open_store(store.url, mode="r").streams()
    assert len({s.key for s in infos}) == 3
    assert {(s.preprocessing["numerics"]["threads"], s.preprocessing["numerics"][
        "forward_batch"]) for s in infos} == {(1, 8), (2, 8), (1, 4)}
    manifest = open_store(store.url, mode="r").manifests(infos[0])[0]
    assert manifest.numerics["torch"] == torch.__version__ and "open_clip" in manifest.numerics


def _verify_numerics(capsys, url: str) -> tuple[int, str]:
    try:
        main(["store", "verify", url, "--numerics"])
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_verify_numerics_lists_a_stream_whose_parts_came_from_different_numerics(
        tmp_path, capsys):
    url = str(tmp_path / "x.zarr")
    store = open_store(url)
    info = store.create_stream(StreamInfo(name="enc", dim=4, dtype="float32"))
    same = store.create_stream(StreamInfo(name="other", dim=4, dtype="float32"))
    for stream, part, torch_version in ((info, "p0", "2.11.0"), (info, "p1", "2.12.0"),
                                        (same, "p0", "2.11.0"), (same, "p1", "2.11.0")):
        numerics = {"device": "cpu", "threads": 1, "torch": torch_version}
        with store.part_writer(stream, part, numerics) as writer:
            writer.write_clip(f"clip-{part}", np.ones((3, 4), "float32"))
    code, out = _verify_numerics(capsys, url)
    assert code == 1, out
    assert "stream enc" in out and "2 different numerics" in out and "2.12.0" in out
    assert "stream other" not in out
    store.delete_stream(info)
    code, out = _verify_numerics(capsys, url)
    assert code == 0, out


def test_overlapping_tasks_keep_the_fixed_thread_count_until_the_last_one_leaves():
    """Two tasks of one dask worker: one finishing (or a new one applying the worker's share of
    the cores) must not change the thread count under the other's forwards."""
    from extract.numerics import set_default_threads

    before = torch.get_num_threads()
    first, second = fixed_threads("cpu", 1), fixed_threads("cpu", 1)
    first.__enter__()
    second.__enter__()
    set_default_threads(2)  # another task starts: the worker's share waits
    assert torch.get_num_threads() == 1
    first.__exit__(None, None, None)
    assert torch.get_num_threads() == 1
    second.__exit__(None, None, None)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(before)
