"""A real dask cluster on 127.0.0.1 for tests: `dask scheduler` and `dask worker` processes.

Workers run in a folder of their own (not the client's), as on a cluster, and import this
checkout. Without a nanny a worker is one process, so a test can SIGKILL it; with a nanny a
killed worker comes back, as it does under a real deployment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


class DaskCluster:
    """`with DaskCluster(tmp, n_workers=2) as cluster:` ... `cluster.address`."""

    def __init__(self, root: Path, n_workers: int = 2, nthreads: int = 1, nanny: bool = False,
                 preload: Path | None = None, scheduler_env: dict[str, str] | None = None,
                 worker_env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.n_workers, self.nthreads, self.nanny = n_workers, nthreads, nanny
        self.preload, self.scheduler_env, self.worker_env = preload, scheduler_env, worker_env
        self.scheduler_file = self.root / "scheduler.json"
        self.worker_dir = self.root / "worker-cwd"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return json.loads(self.scheduler_file.read_text())["address"]

    def __enter__(self) -> DaskCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.worker_dir.mkdir(exist_ok=True)
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--scheduler-file", str(self.scheduler_file)],
            cwd=self.root, env=_env(self.scheduler_env),
            stdout=subprocess.DEVNULL, stderr=open(self.root / "scheduler.log", "wb"))
        deadline = time.time() + 60
        while not self.scheduler_file.exists():
            if time.time() > deadline or self.scheduler.poll() is not None:
                self.__exit__()
                raise RuntimeError("dask scheduler did not start: "
                                   + (self.root / "scheduler.log").read_text()[-2000:])
            time.sleep(0.1)
        for i in range(self.n_workers):
            self.start_worker(i)
        self.wait_for_workers(self.n_workers)
        return self

    def start_worker(self, i: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
               str(self.scheduler_file), "--nthreads", str(self.nthreads), "--name", f"w{i}",
               "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0",
               "--local-directory", str(self.root / f"w{i}-space")]
        cmd.append("--nanny" if self.nanny else "--no-nanny")
        if self.preload:
            cmd += ["--preload", str(self.preload)]
        proc = subprocess.Popen(cmd, cwd=self.worker_dir, env=_env(self.worker_env),
                                stdout=subprocess.DEVNULL,
                                stderr=open(self.root / f"w{i}.log", "wb"))
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, n: int, timeout_s: float = 120) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=timeout_s)

    def kill_worker(self, i: int) -> None:
        self.workers[i].send_signal(signal.SIGKILL)
        self.workers[i].wait()

    def __exit__(self, *exc) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.scheduler]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
