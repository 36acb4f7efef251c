"""Chaos run (issue 17): many extraction runs on one store while processes die, against a quiet
run, on a local .zarr, a local .h5 and an S3 API server (moto, server mode) on 127.0.0.1.

Per store: four `affect extract` processes at once on overlapping encoder sets (A+B, B+C,
A+C, and A+B+C on a dask cluster of two `dask worker` processes, started first, the others
once it has committed a part); one of the three plain runs
is SIGKILLed at random moments and rerun until it finishes; one dask worker is SIGKILLed
during the run (a fresh worker joins). Then it checks: every process exited 0 (the killed one
after its reruns), no clip lost (every clip in every stream, its rows as long as the quiet
run's), none served twice, `affect store verify` clean, and every clip of every stream
bit-equal to a quiet run (one plain process, other task boundaries), the promise of a stream
key (README, "What a stream key promises"). Prints a markdown table for BENCHMARKS.md.

    .venv/bin/python bench/chaos.py [--clips 1000] [--seconds 0.4] [--stores zarr,h5,s3]

tests/test_chaos.py runs it small in the slow suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features_store import open_store  # noqa: E402

ENCODERS = {"A": "clip-vit-b16", "B": "wav2vec2-base", "C": "hsemotion-enet-b0"}
PLAIN_SETS = ["A,B", "B,C", "A,C"]  # the dask run does A,B,C
BATCH_SIZE = 16


@dataclass
class ChaosResult:
    store: str
    seconds: float = 0.0
    kills: int = 0
    worker_kills: int = 0
    exit_codes: dict[str, list[int]] = field(default_factory=dict)
    streams: int = 0
    clips_checked: int = 0
    lost: int = 0
    served_twice: int = 0
    unequal: int = 0
    leftover_duplicate_rows: int = 0
    verify_output: str = ""
    verify_code: int = -1

    @property
    def ok(self) -> bool:
        final = [codes[-1] for codes in self.exit_codes.values()]
        return (all(c == 0 for c in final) and self.lost == 0 and self.served_twice == 0
                and self.unequal == 0 and self.verify_code == 0 and self.streams == 3)


def make_clips(folder: Path, n: int, seconds: float, size: int = 32) -> Path:
    """n tiny videos with a tone each, and a clips file naming them."""
    from pipelines.synthetic.av_writer import write_video

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        path = folder / f"v{i:05d}.mp4"
        frames_n = max(1, int(round(seconds * 25)))
        base = rng.integers(0, 200, size=(1, 1, 3))
        yy, xx = np.mgrid[0:size, 0:size]
        frames = ((base + (xx[..., None] * (i % 5 + 1) + yy[..., None] + 3 * k) % 56)
                  .astype(np.uint8) for k in range(frames_n))
        t = np.arange(int(seconds * 16000)) / 16000
        sound = (0.3 * np.sin(2 * np.pi * (180 + 7 * i) * t)).astype(np.float32)
        write_video(str(path), frames, fps=25, audio=sound, sample_rate=16000)
        lines.append(json.dumps({"clip_id": f"c{i:05d}", "video": str(path)}))
    clips_file = folder / "clips.jsonl"
    clips_file.write_text("\n".join(lines) + "\n")
    return clips_file


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def extract_cmd(clips_file: Path, url: str, encoders: str, clips_per_part: int,
                scheduler_file: Path | None = None) -> list[str]:
    names = ",".join(ENCODERS[e] for e in encoders.split(","))
    cmd = [sys.executable, "-m", "pipelines", "extract", "--clips", str(clips_file),
           "--store", url, "--encoders", names, "--weights", "random", "--reduced",
           "--device", "cpu", "--batch-size", str(BATCH_SIZE), "--clips-per-part",
           str(clips_per_part), "--decode-workers", "1"]
    if scheduler_file is not None:
        cmd += ["--scheduler-file", str(scheduler_file)]
    return cmd


def run_quiet(clips_file: Path, url: str, log: Path) -> float:
    started = time.perf_counter()
    with open(log, "wb") as out:
        code = subprocess.call(extract_cmd(clips_file, url, "A,B,C", 32), env=_env(),
                               stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"quiet run failed ({code}): {log.read_text()[-2000:]}")
    return time.perf_counter() - started


class _Runner:
    """One extraction command, rerun after each SIGKILL until it exits on its own."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path,
                 kill_at: list[float]) -> None:
        self.name, self.cmd, self.env, self.log_dir = name, cmd, env, log_dir
        self.kill_at = list(kill_at)  # seconds after each start at which to SIGKILL it
        self.codes: list[int] = []
        self.kills = 0
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self._start()

    def _start(self) -> None:
        log = open(self.log_dir / f"{self.name}-{len(self.codes)}.log", "wb")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    def poll(self) -> bool:
        """Advance: kill when due, restart when killed; True once it finished on its own."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is None:
            if self.kill_at and time.monotonic() - self.started >= self.kill_at[0]:
                self.kill_at.pop(0)
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
                self.codes.append(-signal.SIGKILL)
                self.kills += 1
                self._start()
            return False
        self.codes.append(code)
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _wait_for_a_commit(url: str, runner: _Runner, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if runner.proc is not None and runner.proc.poll() is not None:
            return  # finished (or failed: the checks say so)
        try:
            store = open_store(url, mode="r")
            if any(store.committed_parts(info) for info in store.streams()):
                return
        except Exception:  # noqa: BLE001 - not created yet: look again
            pass
        time.sleep(1.0)


def run_chaos(clips_file: Path, url: str, work: Path, seed: int, env: dict[str, str],
              kill_window: tuple[float, float], timeout_s: float = 3600
              ) -> tuple[list[_Runner], int]:
    """The four runs at once, with the kills; returns the runners and dask workers killed."""
    sys.path.insert(0, str(REPO / "tests"))
    from dask_cluster import DaskCluster

    rng = random.Random(seed)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    worker_kills = 0
    with DaskCluster(work / "dask", n_workers=2, worker_env=env) as cluster:
        # The dask run starts first and the others once it has committed a part, so its
        # workers are busy (not still planning) when the others and the kills arrive.
        dask_run = _Runner("dask-ABC", extract_cmd(clips_file, url, "A,B,C", 6,
                                                   cluster.scheduler_file), env, logs, [])
        _wait_for_a_commit(url, dask_run, timeout_s)
        victim = rng.randrange(len(PLAIN_SETS))
        runners = []
        for i, encoders in enumerate(PLAIN_SETS):
            # Two kills, each a random time after the (re)start: mid-import, mid-build, mid-part.
            kills = [rng.uniform(*kill_window) for _ in range(2)] if i == victim else []
            runners.append(_Runner(f"run{i}-{encoders.replace(',', '')}",
                                   extract_cmd(clips_file, url, encoders, 4 + i),
                                   env, logs, kills))
        runners.append(dask_run)
        worker_kill_at = time.monotonic() + rng.uniform(*kill_window)
        done: set[str] = set()
        deadline = time.monotonic() + timeout_s
        try:
            while len(done) < len(runners):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"chaos runs did not finish in {timeout_s:.0f} s")
                for runner in runners:
                    if runner.name not in done and runner.poll():
                        done.add(runner.name)
                if (worker_kill_at and time.monotonic() >= worker_kill_at
                        and "dask-ABC" not in done):
                    cluster.kill_worker(0)
                    worker_kills += 1
                    cluster.start_worker(2)  # a fresh worker joins, as a cluster's would
                    worker_kill_at = 0.0
                time.sleep(0.2)
        finally:
            for runner in runners:
                runner.stop()
    return runners, worker_kills


def check(url: str, quiet_url: str, env: dict[str, str], result: ChaosResult) -> None:
    store = open_store(url, mode="r")
    quiet = open_store(quiet_url, mode="r")
    clip_ids = quiet.clip_ids()
    quiet_keys = {s.key for s in quiet.streams()}
    streams = store.streams()
    result.streams = len(streams)
    for info in streams:
        if info.key not in quiet_keys:
            result.unequal += len(clip_ids)  # a key the quiet run never made: other numbers
            continue
        index = store.index(info)
        result.served_twice += len(index.clip_ids) - len(set(index.clip_ids))
        seen: dict[str, int] = {}
        stored_rows = 0
        for manifest in store.manifests(info):
            for entry in manifest.clips:
                seen[entry.clip_id] = seen.get(entry.clip_id, 0) + 1
                if seen[entry.clip_id] > 1:
                    result.leftover_duplicate_rows += entry.n_rows
            stored_rows += manifest.n_rows
        for clip_id in clip_ids:
            if clip_id not in index:
                result.lost += 1
                continue
            mine = store.read_clip(info, clip_id)
            theirs = quiet.read_clip(info.key, clip_id)
            result.clips_checked += 1
            if mine.shape != theirs.shape:
                result.lost += 1
            elif not np.array_equal(mine, theirs):
                result.unequal += 1
    proc = subprocess.run([sys.executable, "-m", "pipelines", "store", "verify", url],
                          env=env, capture_output=True, text=True)
    result.verify_code = proc.returncode
    result.verify_output = (proc.stdout + proc.stderr).strip()[-3000:]


def chaos_store(kind: str, clips_file: Path, work: Path, quiet_url: str, seed: int,
                kill_window: tuple[float, float], s3=None) -> ChaosResult:
    env = _env()
    if kind == "s3":
        bucket = s3.make_bucket()
        url = f"s3://{bucket}/chaos.zarr"
        env.update(s3.env)
        env["AFFECT_CACHE_DIR"] = "off"
    else:
        url = str(work / f"chaos.{kind}")
    result = ChaosResult(kind)
    started = time.perf_counter()
    old_env = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    try:
        runners, result.worker_kills = run_chaos(clips_file, url, work / f"runs-{kind}", seed,
                                                 env, kill_window)
        result.seconds = time.perf_counter() - started
        result.kills = sum(r.kills for r in runners)
        result.exit_codes = {r.name: r.codes for r in runners}
        check(url, quiet_url, env, result)
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    return result


def main(argv: list[str] | None = None) -> list[ChaosResult]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=0.4)
    parser.add_argument("--stores", default="zarr,h5,s3")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--kill-window", default="3,30",
                        help="Kill times are drawn from this range of seconds after a start.")
    parser.add_argument("--work", default=None, help="Keep the stores and logs here.")
    args = parser.parse_args(argv)
    kinds = args.stores.split(",")
    low, high = (float(x) for x in args.kill_window.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        clips_file = make_clips(work / "media", args.clips, args.seconds)
        quiet_url = str(work / "quiet.zarr")
        quiet_s = run_quiet(clips_file, quiet_url, work / "quiet.log")
        server = None
        if "s3" in kinds:
            sys.path.insert(0, str(REPO / "tests"))
            from servers import S3Server

            server = S3Server().start()
        results = []
        try:
            for kind in kinds:
                results.append(chaos_store(kind, clips_file, work, quiet_url, args.seed,
                                           (low, high), server))
        finally:
            if server is not None:
                server.stop()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no "
          f"GPU; {args.clips} clips x {args.seconds:g} s (32x32, 25 fps, with audio); streams "
          f"{', '.join(ENCODERS.values())} (reduced, random); quiet run {quiet_s:.0f} s")
    print()
    print("| store | wall s | runs killed | workers killed | exit codes | clips checked | "
          "lost | served twice | not bit-equal | verify | dup rows left |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        codes = "; ".join(f"{n}: {','.join(map(str, c))}" for n, c in r.exit_codes.items())
        print(f"| {r.store} | {r.seconds:.0f} | {r.kills} | {r.worker_kills} | {codes} | "
              f"{r.clips_checked} | {r.lost} | {r.served_twice} | {r.unequal} | "
              f"{'clean' if r.verify_code == 0 else 'PROBLEMS'} | {r.leftover_duplicate_rows} |")
    for r in results:
        if not r.ok:
            print(f"\n{r.store}: FAILED\n{r.verify_output}")
    return results


if __name__ == "__main__":
    sys.exit(0 if all(r.ok for r in main()) else 1)
