"""The one-shot GPU script (`bench/gpu.sh`), run here on CPU with `--tiny` so it cannot rot.

GPU time is scarce and each machine starts bare: the script must run start to finish the first
time it meets a GPU. Here it runs the same code paths with reduced models and small clips and
must print its one markdown table, with every part filled in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(tmp_path: Path, *args: str) -> str:
    out = tmp_path / "gpu.md"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--device", "cpu", "--tiny",
                             "--out", str(out), "--tmp", str(tmp_path / "work"), *args],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = out.read_text()
    assert table in result.stdout  # printed and written: the same table
    assert "| part | what | setting | value | ratio / share | target |" in table
    return table


def test_decode_part_runs_on_cpu_and_checks_frames(tmp_path):
    table = run_script(tmp_path, "--only", "2")
    rows = [line for line in table.splitlines() if line.startswith("| 2 decode | PyAV")]
    assert len(rows) == 2  # 1 and 2 worker processes in --tiny
    assert all("| identical |" in row for row in rows)
    assert "FRAMES DIFFER" not in table


def test_heads_part_trains_every_registered_head_and_reports_its_data_wait(tmp_path):
    from heads.registry import get_head, list_heads

    table = run_script(tmp_path, "--only", "3")
    trained = [line for line in table.splitlines()
               if line.startswith("| 3 heads") and "steps/s" in line and "data wait" in line]
    # the shipped heads (other tests register heads of their own in this process)
    shipped = [name for name in list_heads() if get_head(name).__module__.startswith("heads.")]
    assert len(shipped) >= 8
    for name in shipped:  # each on a synthetic store of its own dataset's shape
        assert any(f"| {name} training |" in line for line in trained), (name, table)
    assert "FAILED" not in table and "not measured" not in table


@pytest.mark.slow
def test_whole_script_runs_on_cpu_with_tiny_models(tmp_path):
    table = run_script(tmp_path)
    for what in ("clip-vit-b16 end-to-end", "swin-t end-to-end", "wav2vec2-base end-to-end"):
        assert sum(what in line for line in table.splitlines()) >= 1, what
    assert "x model-only" in table
    head_rows = [line for line in table.splitlines() if line.startswith("| 3 heads")]
    trained = [line for line in head_rows if "steps/s" in line]
    assert any("transformer-lstm" in line for line in trained)
    assert any("regnn" in line for line in trained)
    assert not [line for line in head_rows if "not measured" in line]
    assert all("data wait" in line for line in trained)
    assert "FAILED" not in table


@pytest.mark.slow
def test_live_part_measures_every_live_head(tmp_path):
    from pipelines.live.steppers import STEPPERS

    table = run_script(tmp_path, "--only", "4")
    rows = [line for line in table.splitlines() if line.startswith("| 4 live")]
    for head in STEPPERS:  # as fast as possible, then paced from a 25 and a 30 fps camera
        fast = [r for r in rows if r.startswith(f"| 4 live | {head} (reduced) as fast")]
        assert len(fast) == 1 and "frames/s" in fast[0] and "x real time" in fast[0], (head, table)
        paced = [r for r in rows if r.startswith(f"| 4 live | {head} (reduced) paced |")]
        assert [("25 fps camera" in paced[0]), ("30 fps camera" in paced[1])] == [True, True]
        assert all("latency p50" in r and "dropped of" in r for r in paced), paced
    assert "FAILED" not in table
