"""The test suite itself: `make test-quick` exists and stays small, and Ctrl-C on pytest leaves
no process running (tests/child_processes.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]

# A test that starts a long-lived child, as the killed-extraction tests start `affect extract`,
# and is interrupted while the child runs.
STARTS_A_CHILD = """
import subprocess, sys, time
from pathlib import Path

def test_starts_a_child(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path({pid_file!r}).write_text(str(child.pid))
    time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(120)
def test_ctrl_c_on_pytest_leaves_no_child_process_running(tmp_path):
    pid_file = tmp_path / "child.pid"
    (tmp_path / "test_child.py").write_text(STARTS_A_CHILD.format(pid_file=str(pid_file)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    # -p loads the plugin as tests/conftest.py does; rootdir is the scratch folder.
    pytest_run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "child_processes", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_child.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # SIGINT handled as in a terminal, even when these tests run as a background job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child = None
    try:
        deadline = time.time() + 90
        while time.time() < deadline and pytest_run.poll() is None and not pid_file.exists():
            time.sleep(0.1)
        assert pid_file.exists(), pytest_run.communicate(timeout=30)[0][-2000:]
        time.sleep(0.2)  # the pid is written; let the test reach its sleep
        child = int(pid_file.read_text())
        assert _running(child)
        pytest_run.send_signal(signal.SIGINT)  # what Ctrl-C sends to pytest
        output, _ = pytest_run.communicate(timeout=60)
        assert "KeyboardInterrupt" in output, output[-2000:]
        assert not _running(child), f"pytest left process {child} running:\n{output[-2000:]}"
        assert f"ended 1 process(es) the tests left running: {child}" in output, output[-2000:]
    finally:
        if pytest_run.poll() is None:
            pytest_run.kill()
        if child is not None and _running(child):
            os.kill(child, signal.SIGKILL)


def _make_dry_run(target: str) -> str:
    """The pytest command `make TARGET` runs, variables expanded (`make -n`: nothing runs)."""
    dry = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True,
                         text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    (command,) = [line for line in dry.stdout.splitlines() if " -m pytest " in line]
    return command


def test_make_test_quick_runs_the_store_one_encoder_one_head_and_the_cli():
    command = _make_dry_run("test-quick")
    named = re.findall(r"tests/(test_\w+\.py)", command)
    assert named, command
    for name in named:
        assert (REPO / "tests" / name).is_file(), f"test-quick names a missing {name}"
    # The four corners of the product, each by its own test module.
    for module in ("test_store.py", "test_store_cli.py", "test_trainer.py"):
        assert module in named, (module, named)
    assert any(name in named for name in ("test_extract.py", "test_media_runner.py"))
    assert '-m "not slow"' in command
