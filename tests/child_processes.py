"""A pytest plugin: the test run leaves no process behind, Ctrl-C included.

Tests start real processes (`affect extract` runs that get killed, dask schedulers and
workers, S3 servers). A test interrupted while one runs would leave it running, re-parented to
PID 1, still writing to a temporary store. When the session ends, however it ends, every process
this run started that is still alive is ended: SIGTERM (which affect handles like Ctrl-C), then
SIGKILL for what is left after a grace period. Loaded by conftest.py.
"""

from __future__ import annotations

import psutil
import pytest

GRACE_S = 5.0


def _ours(process: psutil.Process) -> bool:
    """Not Python's own helper: multiprocessing's resource tracker exits with this process and
    cleans up after it, so it is left to do that."""
    try:
        return not any("resource_tracker" in part for part in process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def end_leftover_processes(grace_s: float = GRACE_S) -> list[int]:
    """End every descendant of this process; the pids that were still running."""
    leftover = [p for p in psutil.Process().children(recursive=True) if _ours(p)]
    for process in leftover:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(leftover, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in leftover]


@pytest.hookimpl(trylast=True)  # after the fixtures' own teardown (servers, clusters)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    ended = end_leftover_processes()
    if ended:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"ended {len(ended)} process(es) the tests left running: "
                                f"{', '.join(map(str, ended))}")
