"""README.md tells the truth: every command in a ```bash fence runs, in order, and succeeds.

How this reads the README (so that whoever edits it knows the rules):

- Every ```bash fence is one test, named by its line in README.md; its commands run as one bash
  script (``set -euo pipefail``: the first failing command fails the fence), fences in README
  order, all in one scratch folder, as a user typing them into one terminal would (the
  quick-start's store is what the store commands read). A line ending in ``\\`` continues on
  the next; comments and blank lines are bash's business.
- ```text fences (and ```json, ```python, bare fences) are never run: they are for commands
  that cannot run here (a GPU, a cluster, SLURM, the published weights) and for placeholders
  like ``STORE``.
- It runs offline on the CPU with the environment in `ENV`: the CLI reads ``AFFECT_WEIGHTS`` /
  ``AFFECT_REDUCED`` / ``AFFECT_DEVICE`` as the defaults of ``--weights`` / ``--reduced`` /
  ``--device``, so an `affect extract` line without ``--weights random`` still needs no
  download. An option written on the line wins over these.
- `SUBSTITUTIONS` lists, with the reason for each, the few rewrites applied to every command
  (``make`` targets are checked with ``make -n``; ``--device cuda`` becomes cpu; long training
  schedules get ``--epochs 2``). Keep it short: a command that needs more belongs in ```text.
- The fast suite runs the quick-start alone, shrunk by `QUICK_START_SMALLER` (about 2 min of
  CPU, most of it eight interpreter starts);
  `-m slow` runs every fence at the README's own sizes.

A failing command is reported with its README line, the command as run, its exit code and the
tail of its output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

ENV = {
    "AFFECT_WEIGHTS": "random",
    "AFFECT_REDUCED": "1",
    "AFFECT_DEVICE": "cpu",
    "AFFECT_PROGRESS_EVERY": "600",
    "CUDA_VISIBLE_DEVICES": "",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "2",
}

# (pattern, replacement, why): applied to every command, fast or slow.
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (r"^make\b", f"make -n -C {shlex.quote(str(REPO))}",
     "make targets are checked with a dry run (the target exists and expands): they set up "
     ".venv or run the test suite itself; the affect commands behind them run for real here"),
    (r"--device cuda\S*", "--device cpu", "no GPU in the test environment"),
    (r"^(affect train --head (?:transformer\S*|fclstm\S*)(?!.*--epochs).*)$", r"\1 --epochs 2",
     "the transformer family's paper schedule is 30 epochs; 2 run the same code"),
]

QUICK_START_MARK = "affect sample --layout react --out data/react "
# The fast suite's quick-start: the same commands on a smaller sample.
QUICK_START_SMALLER: list[tuple[str, str]] = [
    ("--clips 8 --seconds 8", "--clips 4 --seconds 3"),
    ("--frames 200", "--frames 75"),
    ("--epochs 2", "--epochs 1"),
    ("--set iterations_per_epoch=30", "--set iterations_per_epoch=6"),
    ("--set threshold_at_iteration=10", "--set threshold_at_iteration=3"),
]
COMMAND_TIMEOUT_S = 1800  # one fence


@dataclass
class Command:
    line: int  # in README.md, 1-based
    text: str


@dataclass
class Block:
    line: int
    commands: list[Command]

    @property
    def name(self) -> str:
        first = [w for w in self.commands[0].text.split()[:3] if w != "#"] if self.commands else []
        return f"README.md:{self.line}:{'-'.join(first)}"


def bash_blocks(text: str) -> list[Block]:
    """The ```bash fences of a Markdown text, each as its commands (continuations joined)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```") or fence[3:].strip() != "bash":
            i += 1
            continue
        block = Block(i + 1, [])
        i += 1
        pending: list[str] = []
        start = 0
        while i < len(lines) and not lines[i].strip().startswith("```"):
            line = lines[i]
            if not pending:
                start = i + 1
            if line.rstrip().endswith("\\"):
                pending.append(line.rstrip()[:-1])
            else:
                pending.append(line)
                joined = " ".join(part.strip() for part in pending).strip()
                if joined and not joined.startswith("#"):
                    block.commands.append(Command(start, joined))
                pending = []
            i += 1
        if i >= len(lines):
            raise AssertionError(f"README.md:{block.line}: ```bash fence is never closed")
        blocks.append(block)
        i += 1
    return blocks


def prepared(command: str, smaller: bool = False) -> str:
    for pattern, replacement, _ in SUBSTITUTIONS:
        command = re.sub(pattern, replacement, command)
    if smaller:
        for old, new in QUICK_START_SMALLER:
            command = command.replace(old, new)
    return command


def _affect_on_path(bin_dir: Path) -> None:
    """`affect` as this checkout's CLI (not whatever the venv's entry point was installed from)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "affect"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m pipelines "$@"\n')
    shim.chmod(0o755)


MARK = "@@readme-line "


def run_block(block: Block, workdir: Path, smaller: bool = False) -> None:
    """Run a fence as one bash script (variables carry from line to line, as in a terminal);
    a marker before each command tells which one failed."""
    bin_dir = workdir / ".bin"
    _affect_on_path(bin_dir)
    env = {**os.environ, **ENV,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    commands = {c.line: prepared(c.text, smaller) for c in block.commands}
    script = "set -euo pipefail\n" + "".join(
        f"echo '{MARK}{line}' >&2\n{text}\n" for line, text in commands.items())
    try:
        result = subprocess.run(["bash", "-c", script], cwd=workdir, env=env,
                                capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.name}: ran over {COMMAND_TIMEOUT_S} s\n{exc.stderr or ''}"[-3000:])
    if result.returncode != 0:
        marks = [int(x[len(MARK):]) for x in result.stderr.splitlines() if x.startswith(MARK)]
        line = marks[-1] if marks else block.line
        output = [x for x in (result.stdout + result.stderr).splitlines()
                  if not x.startswith(MARK)]
        tail = "\n".join(output[-25:])
        pytest.fail(f"README.md:{line}: `{commands.get(line, '?')}` exited "
                    f"{result.returncode}\n{tail}", pytrace=False)


BLOCKS = bash_blocks(README.read_text(encoding="utf-8"))


def _quick_start() -> Block:
    found = [b for b in BLOCKS if any(QUICK_START_MARK in c.text for c in b.commands)]
    assert found, f"README.md has no ```bash quick-start (a line with {QUICK_START_MARK!r})"
    return found[0]


def test_the_readme_parser_reads_fences_continuations_and_comments():
    text = ("intro\n```bash\naffect a \\\n    --b 1   # why\n# only a comment\n\nmake demo\n```\n"
            "```text\naffect cannot-run STORE\n```\n```bash\nls\n```\n")
    blocks = bash_blocks(text)
    assert [[c.text for c in b.commands] for b in blocks] == [
        ["affect a --b 1   # why", "make demo"], ["ls"]]
    assert [c.line for c in blocks[0].commands] == [3, 7]
    assert prepared("make demo").startswith("make -n -C ")
    assert prepared("affect extract --device cuda:1 x") == "affect extract --device cpu x"
    assert prepared("affect train --head transformer-lstm --out r").endswith("--epochs 2")
    assert prepared("affect train --head regnn --out r") == "affect train --head regnn --out r"


@pytest.mark.timeout(1200)
def test_quick_start_runs_as_written_on_a_smaller_sample(tmp_path):
    run_block(_quick_start(), tmp_path, smaller=True)
    assert (tmp_path / "runs" / "regnn" / "export").is_dir()


@pytest.fixture(scope="module")
def readme_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_readme_block(block: Block, readme_workdir: Path):
    run_block(block, readme_workdir)
