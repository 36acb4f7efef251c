"""Scale-out: the same tasks as the local runner, submitted to a dask.distributed cluster.

One task = one part per stream, written whole by the worker that runs it, so workers never share
a part; the store may be a shared path or an object store (fsspec URL). The client creates the
streams and the clip table before submitting and always runs `finalize` at the end.

- The client never builds a model: stream keys come from what the store remembers of earlier
  runs (extract/resume.py) or from one planning task run on a worker, which keeps the encoders
  it built for its later tasks. So `--device cuda` needs CUDA on the workers, not the client.
- Each worker builds an encoder once, under a lock (extract/runner.py `get_encoder`), however
  many threads it runs; random weights are seeded, so every worker builds identical ones.
- Tasks are retried by dask (`retries`) when they raise; a task whose worker died is
  resubmitted by the client; a task that still fails puts its clips into the failure ledger
  with the reason, and the run goes on. A task that finds its parts already committed (it was
  recomputed after its worker died) writes nothing again.
- Results are released as they arrive, so a worker lost later does not make dask recompute
  tasks that are already done.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, replace

from distributed.diagnostics.plugin import WorkerPlugin

from features_store import FeatureStore, StreamInfo, open_store
from features_store.errors import UserError
from features_store.fingerprint import fingerprint

from .cluster import GPU_RESOURCE, ClusterRequest, has_gpu_workers, open_client, workers_by_host
from .malloc_tuning import keep_freed_memory
from .report import ExtractOptions, ExtractReport
from .resume import NOTE_PREFIX, already_done, record_plans, request_fingerprint

TASK_RETRIES = 2        # dask reruns a task that raised (a flaky filesystem, a lost connection)
TASK_ATTEMPTS = 3       # the client resubmits a task whose worker died, up to this many times


@dataclass
class RemotePlan:
    """What the client needs of a stream plan: no encoder, just the request and its stream."""

    request: str
    modality: str
    info: StreamInfo


# ---------------------------------------------------------------------------------------------
# On the workers


_TORCH_THREADS: list[int] = []  # set by WorkerSetup on this worker process
_RUNNERS: dict[tuple, object] = {}
_RUNNERS_LOCK = threading.Lock()


class WorkerSetup(WorkerPlugin):
    """Worker plugin: torch may use this worker's share of its host's cores, and the allocator
    reuses freed buffers (`malloc_tuning`).

    Dask starts workers with one OpenMP thread each (OMP_NUM_THREADS=1); a model on one thread
    made a cluster run 2-2.5x slower than a plain local run. Tasks apply the count in their own
    thread (torch's thread count is per thread under OpenMP)."""

    name = "affect-extract-setup"

    def __init__(self, workers_on_host: dict[str, int], cores: int | None = None) -> None:
        self.workers_on_host = workers_on_host
        self.cores = cores

    def setup(self, worker) -> None:
        from .cluster import usable_cores

        sharing = self.workers_on_host.get(worker.address.rsplit(":", 1)[0].split("//")[-1], 1)
        cores = self.cores or usable_cores()
        _TORCH_THREADS[:] = [max(1, cores // max(1, sharing))]
        keep_freed_memory()

    def teardown(self, worker) -> None:
        _TORCH_THREADS.clear()


def _apply_torch_threads() -> None:
    if _TORCH_THREADS:
        from .numerics import set_default_threads

        # Not under another task's forwards: those run with the stream key's thread count.
        set_default_threads(_TORCH_THREADS[0])


def plan_streams(options: ExtractOptions) -> list[RemotePlan]:
    """On a worker: build the encoders (kept for later tasks) and return the stream keys."""
    from .runner import build_plans

    _apply_torch_threads()
    return [RemotePlan(p.request, p.modality, p.info.with_key())
            for p in build_plans(options, options.device)]


def _task_runner(store_url: str, options: ExtractOptions,
                 storage_options: dict | None = None):
    from .runner import TaskRunner, build_plans

    key = (store_url, repr(sorted((storage_options or {}).items())), repr(options))
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(key)
        if runner is None:
            store = open_store(store_url, storage_options=storage_options)
            plans = build_plans(options, options.device)
            for p in plans:
                p.info = store.resolve(p.info.with_key().key)
            runner = TaskRunner(store, plans, options, options.device)
            _RUNNERS[key] = runner
    return runner


def run_task(store_url: str, options: ExtractOptions, task,
             storage_options: dict | None = None) -> ExtractReport:
    """Run one task on a worker (a plain function so dask can ship it).

    `storage_options` travel with the task: workers started elsewhere (tcp://, SLURM) have
    none of the client's `--storage-option` values otherwise."""
    _apply_torch_threads()
    runner = _task_runner(store_url, options, storage_options)
    # A task recomputed after its worker died, or retried after it committed some streams,
    # must not write a committed part again: drop the streams already committed.
    pending = {key: ids for key, ids in task.pending.items()
               if not runner.store.part_committed(key, task.part_id(key))}
    if not pending:
        return ExtractReport(done=len(task.clips))
    if len(pending) < len(task.pending):
        task = replace(task, pending=pending)
    return runner.run(task)


def task_resources(device: str) -> dict[str, int] | None:
    """The worker resource a task needs: GPU tasks only run on workers that advertise a GPU."""
    return {GPU_RESOURCE: 1} if device.startswith("cuda") else None


# ---------------------------------------------------------------------------------------------
# On the client


def absolute_url(url: str) -> str:
    """A local store path made absolute: workers run in other folders."""
    if "://" in url and not url.startswith("file://"):
        return url
    return os.path.abspath(url.removeprefix("file://"))


def _absolute_options(options: ExtractOptions) -> ExtractOptions:
    """Weights and option files named by relative paths, made absolute for the workers."""

    def fix(value):
        if isinstance(value, str) and not os.path.isabs(value) and os.path.exists(value):
            return os.path.abspath(value)
        return value

    encoder_options = {name: {k: fix(v) for k, v in opts.items()}
                       for name, opts in options.encoder_options.items()}
    return replace(options, weights=fix(options.weights), encoder_options=encoder_options)


def _cluster_device(client, device: str) -> str:
    """The device the workers use: "auto" means CUDA when the cluster has GPU workers."""
    gpus = has_gpu_workers(client)
    if device == "auto":
        return "cuda" if gpus else "cpu"
    if device.startswith("cuda") and not gpus:
        raise UserError(f"--device {device}: no worker of the cluster advertises a GPU "
                        f"(start GPU workers with --resources {GPU_RESOURCE}=1, or use "
                        "--device cpu)")
    return device


def _remembered_plans(store: FeatureStore, options: ExtractOptions) -> list[RemotePlan] | None:
    """The stream plans of an earlier run with the same requests, without building anything."""
    known = {s.key: s for s in store.streams()}
    plans = []
    for request in options.encoders:
        request_fp = request_fingerprint(request, options)
        note = store.get_note(NOTE_PREFIX + request_fp) if request_fp else None
        if note is None or note["key"] not in known:
            return None
        plans.append(RemotePlan(request, note["modality"], known[note["key"]]))
    return plans


def _task_key(task, attempt: int) -> str:
    # Readable in the dashboard; unique per attempt (a resubmitted task is a new task).
    first = task.clips[0]["clip_id"]
    return f"extract-{first}-{fingerprint(sorted(task.pending.items()), 10)}-a{attempt}"


class _Progress:
    """clips/s, frames/s, ETA and the number of workers: a bar on a terminal, else a line
    every `every_s` seconds (cluster logs)."""

    def __init__(self, total: int, client, enabled: bool, every_s: float = 30.0) -> None:
        from tqdm import tqdm

        self.total, self.client, self.every_s = total, client, every_s
        self.done = self.frames = 0
        self.started = self.last_line = time.perf_counter()
        self.workers = len(client.scheduler_info(n_workers=-1)["workers"])
        self.workers_at = self.started
        tty = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc="extract (dask)", unit="clip", disable=not tty,
                        dynamic_ncols=True)
        self.lines = enabled and not tty

    def update(self, clips: int, frames: int) -> None:
        self.done += clips
        self.frames += frames
        now = time.perf_counter()
        if now - self.workers_at > 2.0:
            self.workers = len(self.client.scheduler_info(n_workers=-1)["workers"])
            self.workers_at = now
        elapsed = max(now - self.started, 1e-9)
        self.bar.set_postfix(frames_s=f"{self.frames / elapsed:.1f}", workers=self.workers,
                             refresh=False)
        self.bar.update(clips)
        if self.lines and (now - self.last_line >= self.every_s or self.done >= self.total):
            self.last_line = now
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (f"progress: {self.done}/{self.total} clips, {rate:.2f} clips/s, "
                f"{self.frames / elapsed:.1f} frames/s, ETA {eta:.0f} s, "
                f"workers: {self.workers}")

    def close(self) -> None:
        self.bar.close()


def _failure_records(task, exc: BaseException) -> list[dict]:
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        stage, why = "worker", "the worker running it died (killed, out of memory or a crash)"
    else:
        detail = str(exc).strip().splitlines()
        stage, why = "task", f"{type(exc).__name__}: {detail[0] if detail else ''}"
    ids = sorted({clip_id for ids in task.pending.values() for clip_id in ids})
    return [{"clip_id": clip_id, "stage": stage,
             "message": f"{why} ({TASK_ATTEMPTS} attempts; clips of the task: "
                        f"{', '.join(ids)})"}
            for clip_id in ids]


def run_extraction_dask(
    clips: list[dict],
    store_url: str,
    options: ExtractOptions,
    cluster: ClusterRequest | str | None = None,
    n_workers: int | None = None,
    progress: bool = True,
    storage_options: dict | None = None,
) -> ExtractReport:
    """Extract on a dask cluster: a ClusterRequest, a scheduler address, or (None) local:N."""
    from distributed import as_completed

    from .clips import check_clips
    from .runner import finish_run, make_tasks, prepare_store, whole_frame_notes

    if cluster is None or isinstance(cluster, str):
        cluster = (ClusterRequest.parse(cluster, None) if cluster
                   else ClusterRequest("local", n_workers=n_workers))
    started = time.perf_counter()
    if options.limit is not None:
        clips = clips[: options.limit]
    check_clips(clips)
    store_url = absolute_url(store_url)
    options = _absolute_options(options)
    store = open_store(store_url, storage_options=storage_options)
    if cluster.kind == "local":
        from .runner import resolve_device

        # The workers are on this machine: it decides what "auto" means.
        options = replace(options, device=resolve_device(options.device))
    with open_client(cluster, options.device) as client:
        options = replace(options, device=_cluster_device(client, options.device))
        finished = already_done(clips, store, options)
        if finished is not None:
            return finished
        hosts = workers_by_host(client)
        client.register_plugin(WorkerSetup(hosts))
        n = sum(hosts.values())
        print(f"dask: {client.scheduler.address}, workers: {n}, device: {options.device}; "
              f"dashboard: {_dashboard(client)}", file=sys.stderr, flush=True)
        resources = task_resources(options.device)
        plans = _remembered_plans(store, options)
        if plans is None:
            plans = _plan_on_a_worker(client, options, resources)
        prepare_store(store, clips, plans)
        record_plans(store, plans, options)
        tasks, skipped = make_tasks(clips, plans, store, options.clips_per_part)
        report = ExtractReport(clips_total=len(clips), skipped=skipped,
                               notes=whole_frame_notes(tasks, plans))
        bar = _Progress(sum(len(t.clips) for t in tasks), client, progress)
        attempts: dict = {}
        try:

            def submit(task, attempt: int):
                future = client.submit(run_task, store_url, options, task, storage_options,
                                       pure=False, key=_task_key(task, attempt),
                                       retries=TASK_RETRIES,
                                       resources=resources)
                attempts[future.key] = (task, attempt, future)
                return future

            running = as_completed([submit(t, 1) for t in tasks])
            for future in running:
                task, attempt, _ = attempts.pop(future.key)
                try:
                    part = future.result()
                except Exception as exc:  # the task's own error or its worker's death
                    if attempt < TASK_ATTEMPTS:
                        running.add(submit(task, attempt + 1))
                        continue
                    part = ExtractReport(failed=len(task.clips),
                                         failures=_failure_records(task, exc))
                    store.add_failures(part.failures)
                finally:
                    future.release()  # done: never recomputed if its worker goes away
                report.merge(part)
                bar.update(part.done + part.failed, part.frames)
        except BaseException:
            # Interrupted (Ctrl-C, the scheduler gone): stop what has not started, and merge
            # what was committed; tasks still running may yet commit, so nothing is pruned.
            client.cancel([future for _, _, future in attempts.values()])
            store.refresh()
            store.finalize(prune_orphans=False)
            raise
        finally:
            bar.close()
    return finish_run(report, store, plans, started)


def _plan_on_a_worker(client, options: ExtractOptions, resources) -> list[RemotePlan]:
    future = client.submit(plan_streams, options, pure=False, resources=resources,
                           retries=TASK_RETRIES, key=f"extract-plan-{time.time_ns()}")
    try:
        return future.result()
    except UserError:
        raise  # bad weights, unknown encoder: the user's to fix, said in one line
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        raise UserError(f"building the encoders on a worker failed ({type(exc).__name__}: "
                        f"{detail[0] if detail else ''}); see the worker's log") from None


def _dashboard(client) -> str:
    services = client.scheduler_info(n_workers=0).get("services", {})
    if not services.get("dashboard"):
        return "none (the scheduler runs without one)"
    try:
        import bokeh  # noqa: F401  (the dashboard's pages need it)
    except ImportError:
        return f"{client.dashboard_link} (its pages need bokeh: the [cluster] extra)"
    return client.dashboard_link
