"""A lab's story: the same extraction, scaled out over a dask cluster, writes the same store.

Real schedulers and workers on 127.0.0.1 (processes started by the tests, workers in a folder
of their own); reduced encoders with random weights. What is checked is what a user relies on:
the store a cluster writes is bitwise the store a local run writes, every clip is in it exactly
once, and faults (a dead worker, a clip that kills its worker) cost nothing but time or a
ledger entry.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter

import numpy as np
import pytest
from dask_cluster import DaskCluster
from distributed import Client
from servers import s3_env, s3_server, s3_store_url  # noqa: F401  (pytest fixtures)

from extract.cluster import usable_cores
from extract.runner import ExtractOptions, run_extraction
from features_store import open_store, verify
from pipelines.cli import main
from pipelines.synthetic.av_writer import write_video

VIDEO = "hsemotion-enet-b0"
AUDIO = "vggish"
N_CLIPS = 4


def _frames(n: int, seed: int, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(size, size, 3))
    return np.stack([(base + 3 * k) % 255 for k in range(n)]).astype(np.uint8)


def _tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def clips_file(tmp_path_factory):
    """Four short talking clips, listed with paths relative to the clips file."""
    root = tmp_path_factory.mktemp("clips")
    lines = []
    for i in range(N_CLIPS):
        write_video(root / f"c{i}.mp4", _frames(12 + 4 * i, i, size=32), fps=25,
                    audio=_tone(0.5 + 0.2 * i, 200 + 40 * i))
        lines.append({"clip_id": f"c{i}", "video": f"c{i}.mp4"})
    path = root / "clips.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


ARGS = ["--encoders", f"{VIDEO},{AUDIO}", "--weights", "random", "--reduced", "--device", "cpu",
        "--batch-size", "16", "--clips-per-part", "1", "--decode-workers", "1"]


def _options() -> ExtractOptions:
    return ExtractOptions(encoders=[VIDEO, AUDIO], weights="random", reduced=True, device="cpu",
                          batch_size=16, clips_per_part=1, decode_workers=1)


@pytest.fixture(scope="module")
def local_store(clips_file, tmp_path_factory):
    """The reference: the same clips extracted without any scheduler, in this process with
    all its torch threads: the stream key fixes the forward's threads and batch shape, so the
    workers' rows are bitwise these (extract.numerics)."""
    import torch

    from extract.clips import read_clips_file

    store = open_store(str(tmp_path_factory.mktemp("local") / "local.zarr"))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, usable_cores()))
    try:
        run_extraction(read_clips_file(str(clips_file)), store, _options(), progress=False)
    finally:
        torch.set_num_threads(threads)
    return store


def extract(clips_file, store: str, *more: str) -> None:
    main(["extract", "--clips", str(clips_file), "--store", store, *ARGS, *more])


def assert_same_store(store_url: str, reference) -> None:
    """Bitwise the reference's rows, every clip committed exactly once, verify clean."""
    store = open_store(store_url, "r")
    assert sorted(s.key for s in store.streams()) == sorted(s.key for s in reference.streams())
    for info in reference.streams():
        entries = Counter(c.clip_id for m in store.manifests(info.key) for c in m.clips)
        assert entries == Counter({c: 1 for c in reference.committed_clip_ids(info.key)})
        for clip_id in reference.committed_clip_ids(info.key):
            np.testing.assert_array_equal(store.read_clip(info.key, clip_id),
                                          reference.read_clip(info.key, clip_id))
    report = verify(store)
    assert report.ok, report.problems


def test_a_two_worker_cluster_writes_the_store_a_local_run_writes(
    clips_file, local_store, tmp_path, monkeypatch, capsys
):
    """Workers with two threads each, in another folder, given a relative store path."""
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    monkeypatch.chdir(client_dir)
    with DaskCluster(tmp_path / "cluster", n_workers=2, nthreads=2) as cluster:
        extract(clips_file, "cluster.zarr", "--scheduler", cluster.address)
        out = capsys.readouterr()
        assert f"{N_CLIPS} done" in out.out, out
        assert "workers: 2" in out.err, out.err           # progress names the cluster size
        progress = [line for line in out.err.splitlines() if line.startswith("progress:")]
        assert progress and f"{N_CLIPS}/{N_CLIPS} clips" in progress[-1], out.err
        assert all(w in progress[-1] for w in ("clips/s", "frames/s", "ETA")), progress
        assert not (cluster.worker_dir / "cluster.zarr").exists()  # the path was made absolute
        with Client(cluster.address) as client:  # torch got each worker's share of the cores
            threads = client.run(lambda: __import__("extract.dask_runner").dask_runner
                                 ._TORCH_THREADS)
        assert list(threads.values()) == [[max(1, usable_cores() // 2)]] * 2
    assert_same_store(str(client_dir / "cluster.zarr"), local_store)


def test_workers_reuse_freed_memory_as_a_plain_process_does(tmp_path):
    """A dask nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc map and
    fault in every buffer over 128 KiB afresh: the model ran about 1.5x slower in a worker than
    in one process. The workers affect sets up put glibc's thresholds back."""
    from extract.dask_runner import WorkerSetup

    def page_faults_per_buffer() -> float:  # defined here: it is pickled into the worker
        """Minor page faults of allocating, filling and freeing an 8 MiB buffer, averaged:
        about 2,048 when each buffer is a fresh mmap, near 0 when freed memory is reused."""
        import resource

        warm = bytearray(8 << 20)  # the first buffer grows the heap (reused after the fix)
        del warm
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            buffer = bytearray(8 << 20)  # zero-filled: every page written
            del buffer
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20

    with DaskCluster(tmp_path / "cluster", n_workers=1, nanny=True) as cluster, \
            Client(cluster.address) as client:
        env = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        assert list(env.values()) == ["65536"]  # what dask does to every worker it spawns
        before = list(client.run(page_faults_per_buffer).values())[0]
        client.register_plugin(WorkerSetup({}))
        after = list(client.run(page_faults_per_buffer).values())[0]
    assert before > 1000, before  # the slow case is real here
    assert after < 100, after


def _without_random_warning(err: str) -> list[str]:
    return [line for line in err.strip().splitlines() if not line.startswith("WARNING: random")]


def test_an_unreachable_scheduler_is_one_error_line_and_fast(clips_file, tmp_path, capsys):
    started = time.perf_counter()
    with pytest.raises(SystemExit) as stopped:
        extract(clips_file, str(tmp_path / "s.zarr"), "--scheduler", "tcp://127.0.0.1:1")
    assert stopped.value.code == 2
    assert time.perf_counter() - started < 20
    lines = _without_random_warning(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "tcp://127.0.0.1:1" in lines[0]
    with pytest.raises(SystemExit) as stopped:
        extract(clips_file, str(tmp_path / "s.zarr"), "--scheduler-file",
                str(tmp_path / "nowhere.json"))
    assert stopped.value.code == 2
    lines = _without_random_warning(capsys.readouterr().err)
    assert len(lines) == 1 and "nowhere.json" in lines[0], lines


def test_scheduler_specs_and_cluster_sizes():
    """`local[:N]`, addresses and scheduler files; default size: one worker per core pair."""
    from extract.cluster import ClusterRequest, default_local_workers

    assert ClusterRequest.parse("local:3", None) == ClusterRequest("local", n_workers=3)
    assert ClusterRequest.parse("local", None).n_workers is None
    assert ClusterRequest.parse("tcp://10.0.0.1:8786", None).address == "tcp://10.0.0.1:8786"
    assert ClusterRequest.parse(None, "s.json").scheduler_file == "s.json"
    assert ClusterRequest.parse(None, None) is None
    for bad in ("local:0", "local:x", "10.0.0.1:8786"):
        with pytest.raises(Exception, match="--scheduler"):
            ClusterRequest.parse(bad, None)
    assert default_local_workers("cpu", cpu_count=16, gpu_count=0) == 8
    assert default_local_workers("cpu", cpu_count=1, gpu_count=0) == 1
    assert default_local_workers("cuda", cpu_count=16, gpu_count=4) == 4


def test_gpu_tasks_ask_for_a_gpu_worker_and_the_device_is_in_the_stream_key():
    """Testable here on the CPU path only: the annotations, and distinct keys per device."""
    from extract.dask_runner import task_resources
    from extract.plan import compute_identity

    assert task_resources("cuda") == {"GPU": 1}
    assert task_resources("cuda:0") == {"GPU": 1}
    assert task_resources("cpu") is None
    assert compute_identity("cuda") != compute_identity("cpu")
    assert compute_identity("cuda:1") == compute_identity("cuda:0")  # which GPU does not matter
    from extract.cluster import gpu_worker_options

    placed = gpu_worker_options(2, ["2", "5"])  # CUDA_VISIBLE_DEVICES=2,5: one GPU each
    assert [w["env"]["CUDA_VISIBLE_DEVICES"] for w in placed] == ["2", "5"]
    assert all(w["resources"] == {"GPU": 1} and w["nthreads"] == 1 for w in placed)


def test_workers_build_an_encoder_once_even_with_many_threads():
    """Finding: two threads building one random-weight encoder at once got two different ones."""
    from extract.runner import get_encoder

    options = ExtractOptions(encoders=[VIDEO], weights="random:7", reduced=True, device="cpu")
    built: list = []
    threads = [threading.Thread(target=lambda: built.append(get_encoder(VIDEO, options, "cpu")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(e) for e in built}) == 1


@pytest.mark.slow
def test_local_2_writes_the_same_store(clips_file, local_store, tmp_path, capsys):
    extract(clips_file, str(tmp_path / "l2.zarr"), "--scheduler", "local:2")
    assert "workers: 2" in capsys.readouterr().err
    assert_same_store(str(tmp_path / "l2.zarr"), local_store)


@pytest.mark.slow
def test_a_worker_killed_mid_run_changes_nothing(clips_file, local_store, tmp_path):
    store = str(tmp_path / "killed.zarr")
    with DaskCluster(tmp_path / "cluster", n_workers=2, nthreads=1) as cluster:
        errors: list[BaseException] = []

        def client() -> None:
            try:
                extract(clips_file, store, "--scheduler", cluster.address)
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        run = threading.Thread(target=client)
        run.start()
        deadline = time.time() + 300
        while time.time() < deadline and run.is_alive():
            manifests = [n for _, _, names in os.walk(store) for n in names
                         if n.startswith("part-") and n.endswith(".json")]
            if len(manifests) >= 3:
                cluster.kill_worker(0)
                break
            time.sleep(0.05)
        assert cluster.workers[0].returncode is not None, "the run ended before the kill"
        run.join(timeout=600)
        assert not errors, errors
    assert_same_store(store, local_store)


POISON = '''
import os, signal

def dask_setup(worker):
    """Like a decoder that segfaults on one file: the worker dies whenever it starts c3."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class Poison(WorkerPlugin):
        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and "-c3-" in str(key):
                os.kill(os.getpid(), signal.SIGKILL)

    worker.plugins["poison"] = Poison()
'''


@pytest.mark.slow
def test_a_clip_that_kills_its_worker_every_time_goes_to_the_ledger(
    clips_file, local_store, tmp_path, capsys
):
    preload = tmp_path / "poison.py"
    preload.write_text(POISON)
    store = str(tmp_path / "poison.zarr")
    with DaskCluster(tmp_path / "cluster", n_workers=2, nthreads=1, nanny=True, preload=preload,
                     scheduler_env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
                     ) as cluster:
        extract(clips_file, store, "--scheduler", cluster.address)
    out = capsys.readouterr().out
    assert f"{N_CLIPS - 1} done" in out and "1 failed" in out, out
    written = open_store(store, "r")
    ledger = {f["clip_id"]: f for f in written.failures()}
    assert set(ledger) == {"c3"} and ledger["c3"]["stage"] == "worker"
    for info in local_store.streams():
        assert written.committed_clip_ids(info.key) == {f"c{i}" for i in range(N_CLIPS)} - {"c3"}
        for clip_id in written.committed_clip_ids(info.key):
            np.testing.assert_array_equal(written.read_clip(info.key, clip_id),
                                          local_store.read_clip(info.key, clip_id))
    assert verify(written).ok  # finalized: the index is merged, nothing dangling


@pytest.mark.slow
def test_two_runs_through_a_two_worker_cluster_complete_a_store_on_s3(
    clips_file, local_store, tmp_path, s3_store_url  # noqa: F811  (the fixture)
):
    """The second run finishes a partly extracted S3 store: nothing the workers committed in
    either run is lost, nothing is extracted twice."""
    url = s3_store_url("cluster.zarr")
    with DaskCluster(tmp_path / "cluster", n_workers=2, nthreads=2) as cluster:
        extract(clips_file, url, "--scheduler", cluster.address, "--limit", "3")
        first = open_store(url, "r")
        assert all(len(first.committed_clip_ids(s.key)) == 3 for s in first.streams())
        extract(clips_file, url, "--scheduler", cluster.address)
    assert_same_store(url, local_store)
