"""Which dask cluster a run uses: `--scheduler local[:N]`, `tcp://HOST:PORT`, `--scheduler-file`.

A local cluster is sized to the machine: one worker per GPU for GPU runs (each worker sees one
GPU; `dask-cuda`'s LocalCUDACluster when installed), else one worker per pair of cores, each
with one task thread and the torch threads of its share of the cores. Workers that may run GPU
tasks advertise a `GPU` resource; GPU tasks ask for it, so a CPU-only worker never gets one.
Connecting is bounded: an unreachable scheduler is a one-line error after a few seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

from features_store.errors import UserError

CONNECT_TIMEOUT_S = 5.0      # an address that does not answer fails fast
# The address schemes dask.distributed's comms understand.
SCHEDULER_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")
WORKERS_TIMEOUT_S = 120.0    # a scheduler with no workers is an error, not a hang
GPU_RESOURCE = "GPU"


@dataclass(frozen=True)
class ClusterRequest:
    kind: str                        # "local" | "address" | "file"
    n_workers: int | None = None     # local: None means sized to the machine
    address: str | None = None
    scheduler_file: str | None = None

    @classmethod
    def parse(cls, scheduler: str | None, scheduler_file: str | None) -> ClusterRequest | None:
        if scheduler and scheduler_file:
            raise UserError("give either --scheduler or --scheduler-file, not both")
        if scheduler_file:
            return cls("file", scheduler_file=scheduler_file)
        if not scheduler:
            return None
        if scheduler == "local" or scheduler.startswith("local:"):
            count = scheduler.partition(":")[2]
            if count and (not count.isdigit() or int(count) < 1):
                raise UserError(f"--scheduler {scheduler}: N in local:N must be a positive "
                                "number of workers")
            return cls("local", n_workers=int(count) if count else None)
        scheme = scheduler.partition("://")[0] if "://" in scheduler else None
        if scheme not in SCHEDULER_SCHEMES:
            raise UserError(f"--scheduler {scheduler[:80]}: expected local, local:N or a "
                            f"scheduler address such as tcp://HOST:8786 (schemes: "
                            f"{', '.join(SCHEDULER_SCHEMES)})")
        return cls("address", address=scheduler)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_local_workers(device: str, cpu_count: int, gpu_count: int) -> int:
    """One worker per GPU for GPU runs, else one per pair of cores (decode threads + model)."""
    if device.startswith("cuda"):
        return max(1, gpu_count)
    return max(1, cpu_count // 2)


def _dashboard_address() -> str:
    # A free port: two runs on one machine must not fight over dask's default 8787.
    return "127.0.0.1:0"


def gpu_worker_options(n_workers: int, visible: list[str]) -> list[dict]:
    """Without dask-cuda, the same placement by hand: worker i sees only the i-th GPU this
    process may use (so "cuda" in a worker is its own GPU), runs one task at a time and
    advertises one GPU resource."""
    return [{"nthreads": 1, "resources": {GPU_RESOURCE: 1}, "host": "127.0.0.1",
             "env": {"CUDA_VISIBLE_DEVICES": visible[i % len(visible)]}}
            for i in range(n_workers)]


def _local_cluster(n_workers: int, device: str):
    """A cluster on this machine; GPU runs get one worker per GPU, each seeing only its own."""
    from distributed import LocalCluster

    dashboard = _dashboard_address()
    if not device.startswith("cuda"):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                            host="127.0.0.1", dashboard_address=dashboard)
    resources = {GPU_RESOURCE: 1}
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        LocalCUDACluster = None
    if LocalCUDACluster is not None:
        return LocalCUDACluster(n_workers=n_workers, threads_per_worker=1, resources=resources,
                                dashboard_address=dashboard)
    from distributed import Nanny, Scheduler, SpecCluster

    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    workers = {f"gpu-{i}": {"cls": Nanny, "options": options} for i, options in enumerate(
        gpu_worker_options(n_workers, visible or [str(i) for i in range(_gpu_count())]))}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1",
                                                "dashboard_address": dashboard}}
    return SpecCluster(workers=workers, scheduler=scheduler)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def open_client(request: ClusterRequest, device: str) -> Iterator:
    """A connected `distributed.Client` with at least one worker; closes what it started."""
    from distributed import Client

    cluster = None
    try:
        if request.kind == "local":
            if device.startswith("cuda") and _gpu_count() == 0:
                raise UserError("--device cuda: no CUDA device is visible to torch")
            n = request.n_workers or default_local_workers(device, usable_cores(),
                                                           _gpu_count())
            cluster = _local_cluster(n, device)
            client = Client(cluster)
            where = "a local cluster"
        elif request.kind == "file":
            if not os.path.isfile(request.scheduler_file):
                raise UserError(f"--scheduler-file {request.scheduler_file}: no such file "
                                "(the scheduler writes it when started with --scheduler-file)")
            where = f"the dask scheduler of {request.scheduler_file}"
            address = _scheduler_file_address(request.scheduler_file)
            client = _connect(where, address=address)
        else:
            where = f"the dask scheduler at {request.address}"
            client = _connect(where, address=request.address)
        try:
            try:
                client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
            except TimeoutError:
                raise UserError(f"no dask worker joined {where} within "
                                f"{WORKERS_TIMEOUT_S:.0f} s (start some with `dask worker "
                                "ADDRESS`)") from None
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def _scheduler_file_address(path: str) -> str:
    """The address in a scheduler file (`dask scheduler --scheduler-file` writes JSON with it);
    read here so that a file of anything else is one line, not an error deep in distributed."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (ValueError, UnicodeDecodeError, RecursionError):
        info = None
    address = info.get("address") if isinstance(info, dict) else None
    scheme = address.partition("://")[0] if isinstance(address, str) else None
    if scheme not in SCHEDULER_SCHEMES:
        raise UserError(f"--scheduler-file {path}: not a dask scheduler file (JSON with the "
                        "scheduler's \"address\", as `dask scheduler --scheduler-file` writes)")
    return address


def _connect(where: str, **how):
    from distributed import Client

    try:
        return Client(timeout=CONNECT_TIMEOUT_S, **how)
    except ValueError as exc:  # a scheduler file that is not the scheduler's JSON, a bad address
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot use {where} ({reason}); give the file the scheduler wrote "
                        "with --scheduler-file, or its tcp:// address") from None
    except (OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot reach {where} ({reason}); is the scheduler running and the "
                        "address right?") from None


def workers_by_host(client) -> dict[str, int]:
    """How many workers run on each host (they share its cores)."""
    counts: dict[str, int] = {}
    for info in client.scheduler_info(n_workers=-1)["workers"].values():
        host = info.get("host", "")
        counts[host] = counts.get(host, 0) + 1
    return counts


def has_gpu_workers(client) -> bool:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return any(info.get("resources", {}).get(GPU_RESOURCE) for info in workers)
