"""Scale-out: the same tasks as the local runner, submitted to a dask.distributed cluster.

One task = one part per stream, written whole by the worker that runs it, so workers never share
a part; the store may be a shared path or an object store (fsspec URL). The coordinator creates
the streams and the clip table before submitting and runs `finalize` after every task is back.
Each worker process builds its encoders once and reuses them for all its tasks.
"""

from __future__ import annotations

import time

from features_store import open_store

from .resume import record_plans
from .runner import (
    ExtractOptions,
    ExtractReport,
    Task,
    TaskRunner,
    build_plans,
    finish_run,
    make_tasks,
    prepare_store,
    resolve_device,
)

_WORKER_RUNNERS: dict[tuple, TaskRunner] = {}


def _runner_for(store_url: str, options: ExtractOptions) -> TaskRunner:
    key = (store_url, repr(options))
    runner = _WORKER_RUNNERS.get(key)
    if runner is None:
        device = resolve_device(options.device)
        store = open_store(store_url)
        plans = build_plans(options, device)
        for p in plans:
            p.info = store.resolve(p.info.with_key().key)
        runner = TaskRunner(store, plans, options, device)
        _WORKER_RUNNERS[key] = runner
    return runner


def run_task(store_url: str, options: ExtractOptions, task: Task) -> ExtractReport:
    """Run one task on a worker (a plain function so dask can ship it)."""
    return _runner_for(store_url, options).run(task)


def run_extraction_dask(
    clips: list[dict],
    store_url: str,
    options: ExtractOptions,
    scheduler: str | None = None,
    n_workers: int = 2,
    processes: bool = True,
    progress: bool = True,
) -> ExtractReport:
    """Extract on a dask cluster (`scheduler` address) or a LocalCluster of `n_workers`."""
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    started = time.perf_counter()
    if options.limit is not None:
        clips = clips[: options.limit]
    store = open_store(store_url)
    plans = build_plans(options, resolve_device(options.device))
    prepare_store(store, clips, plans)
    record_plans(store, plans, options)
    tasks, skipped = make_tasks(clips, plans, store, options.clips_per_part)
    report = ExtractReport(clips_total=len(clips), skipped=skipped)
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                               dashboard_address=None)
    client = Client(scheduler or cluster)
    try:
        futures = [client.submit(run_task, store_url, options, t, pure=False) for t in tasks]
        with tqdm(total=sum(len(t.clips) for t in tasks), desc="extract (dask)", unit="clip",
                  disable=None if progress else True) as bar:
            for future in as_completed(futures):
                part = future.result()
                report.merge(part)
                bar.update(part.done + part.failed)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return finish_run(report, store, plans, started)
