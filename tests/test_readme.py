"""README.md tells the truth: every command in a ```bash fence runs, in order, and succeeds.

How this reads the README (so that whoever edits it knows the rules):

- Every ```bash fence is one test, named by its line in README.md; its commands run as one bash
  script (``set -euo pipefail``: the first failing command fails the fence), fences in README
  order, all in one scratch folder, as a user typing them into one terminal would (the
  quick-start's store is what the store commands read). A line ending in ``\\`` continues on
  the next; comments and blank lines are bash's business.
- ``python`` in a fence is the interpreter running the tests (where affect is installed).
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
    """`affect` as this checkout's CLI (not whatever the venv's entry point was installed from),
    and `python` as this environment's interpreter (where affect is installed)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, command in (("affect", f'{shlex.quote(sys.executable)} -m pipelines'),
                          ("python", shlex.quote(sys.executable))):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
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


def _section(title: str) -> str:
    """The README text under a `## ` heading, up to the next `## ` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


FEATURES_SECTION = "Features in two lines"


@pytest.mark.timeout(900)
def test_features_in_two_lines_run_as_written(tmp_path):
    """extract --media, affect.open_store, clips_frame, to_xarray, export --format hf, the torch
    Dataset, heads ls and encoders fetch: the section's fences run on their own."""
    pytest.importorskip("xarray")
    pytest.importorskip("datasets")
    blocks = bash_blocks(_section(FEATURES_SECTION))
    assert len(blocks) == 2 and sum(len(b.commands) for b in blocks) >= 9
    for block in blocks:
        run_block(block, tmp_path)
    assert (tmp_path / "out" / "media.zarr" / "store.json").is_file()
    assert (tmp_path / "out" / "media-hf").is_dir()


def _fenced_lines(text: str) -> set[int]:
    fenced, inside = set(), False
    for number, line in enumerate(text.splitlines()):
        if line.strip().startswith("```"):
            inside = not inside
            fenced.add(number)
        elif inside:
            fenced.add(number)
    return fenced


def test_the_readme_speaks_of_the_product_every_head_in_its_opening_no_issue_numbers():
    from heads.registry import get_head, list_heads

    text = README.read_text(encoding="utf-8")
    opening = text[:text.index("\n## ")]
    shipped = [name for name in list_heads() if get_head(name).paper]  # test heads have none
    assert len(shipped) >= 8
    missing = [name for name in shipped if f"`{name}`" not in opening]
    assert not missing, f"README's opening does not name the heads {missing}"
    fenced = _fenced_lines(text)
    headings = [line for number, line in enumerate(text.splitlines())
                if line.startswith("#") and number not in fenced]
    numbered = [h for h in headings if re.search(r"\bissues?\s*#?\d+|#\d+", h, re.I)]
    assert not numbered, f"headings that name issue numbers: {numbered}"


# Options whose value is a path the command writes (a store is written by extract and import).
WRITTEN_BY = ("--out", "--store", "--export")


def _written_paths(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    paths = [words[i + 1] for i, w in enumerate(words[:-1]) if w in WRITTEN_BY]
    paths += [words[i + 1] for i, w in enumerate(words[:-1]) if w in (">", ">>")]
    return [p for p in paths if "$" not in p and "://" not in p]


def test_readme_commands_write_only_under_git_ignored_folders():
    """Running the README leaves the checkout clean: all it writes is git-ignored."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    written = sorted({p for block in BLOCKS for c in block.commands
                      for p in _written_paths(c.text)})
    assert any(p.endswith("clips.jsonl") for p in written), written  # the parser finds them
    checked = subprocess.run(["git", "check-ignore", "--no-index", "--verbose",
                              "--non-matching", *written], cwd=REPO, capture_output=True,
                             text=True)
    tracked = [line.split("\t")[-1] for line in checked.stdout.splitlines()
               if line.startswith("::")]
    assert not tracked, f"README commands write where git does not ignore: {tracked}"


def _gigabytes(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, f"README's setup section does not say {pattern!r}"
    return float(found.group(1))


def _disk_gb(paths: list[Path]) -> float:
    if not paths:
        return 0.0
    out = subprocess.run(["du", "-sk", "-c", *map(str, paths)], capture_output=True, text=True,
                         check=True).stdout.splitlines()[-1]
    return int(out.split()[0]) * 1024 / 1e9


def test_the_readme_states_the_install_size_and_the_cpu_only_torch_install():
    setup = _section("Setup: size and time")
    assert "--index-url https://download.pytorch.org/whl/cpu" in setup
    pins = dict(re.findall(r"^(torch|torchaudio|torchvision)==(\S+)$",
                           (REPO / "constraints.txt").read_text(), re.M))
    assert all(f"{name}=={version}" in setup for name, version in pins.items()), pins
    stated_total = _gigabytes(r"about (\d+(?:\.\d+)?) GB", setup)
    stated_cuda = _gigabytes(r"about (\d+(?:\.\d+)?) GB are the CUDA libraries", setup)
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running in a virtual environment: nothing to measure")
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    cuda = sorted((site / "site-packages").glob("nvidia*"))
    measured_cuda = _disk_gb([p for p in cuda if p.is_dir()])
    if measured_cuda < 0.1:
        pytest.skip("this environment has torch's CPU wheels: the CUDA figure cannot be checked")
    measured_total = _disk_gb([Path(sys.prefix)])
    # What the README says stays true as dependencies move: within a quarter either way.
    assert 0.75 < stated_total / measured_total < 1.33, (stated_total, measured_total)
    assert 0.75 < stated_cuda / measured_cuda < 1.33, (stated_cuda, measured_cuda)
