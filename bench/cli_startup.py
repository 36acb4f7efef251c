"""How long `affect --help`, `affect encoders ls` and two `affect train` argument errors take,
and what they import.

Each command runs once in a fresh interpreter (wall time includes Python's own start-up), with
the source tree given by --tree (default: this checkout), so an older checkout can be measured
the same way for a ratio:

    python bench/cli_startup.py [--tree PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HEAVY = ("torch", "zarr", "numpy", "timm", "transformers", "open_clip")
PROBE = """
import sys
from pipelines.cli import main
try:
    main({args!r})
except SystemExit:
    pass
print("LOADED=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def measure(tree: str, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
                            capture_output=True, text=True, env=env, check=True, cwd=tree)
    seconds = time.perf_counter() - started
    loaded = next(line for line in result.stderr.splitlines() if line.startswith("LOADED="))
    return {"command": "affect " + " ".join(args), "seconds": round(seconds, 2),
            "heavy_imports": [m for m in loaded[len("LOADED="):].split(",") if m]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))
    tree = parser.parse_args().tree
    # the two argument errors time how long a mistake takes to be reported
    for args in (["--help"], ["encoders", "ls"], ["train"],
                 ["train", "--head", "trm", "--store", "no-such-store.zarr"]):
        print(json.dumps({"tree": tree, **measure(tree, args)}))


if __name__ == "__main__":
    main()
