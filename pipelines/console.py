"""What the CLI prints on stderr: affect's own lines, through the progress bar; the libraries'
chatter only with ``--verbose`` (or ``AFFECT_VERBOSE=1``).

Model libraries talk a lot while an encoder is built: open_clip warns on the root logger that
random weights are random, transformers draws "Writing model shards" / "Loading weights" bars,
timm and dask's nanny log warnings. None of it is for the user of `affect`, and lines written
straight to stderr get glued onto a progress bar. So the CLI sets up logging once, before any
of those libraries is imported: records from affect's packages are written with `tqdm.write`
(above the bar, never into it); records from elsewhere, Python warnings raised by other
packages, and the libraries' progress bars are dropped unless verbose. Errors (level ERROR and
above) from anywhere are always shown.
"""

from __future__ import annotations

import logging
import os
import sys

OUR_PACKAGES = ("extract", "pipelines", "heads", "features_store")
_OUR_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), p)
                  for p in OUR_PACKAGES)
# Environment switches the libraries read when imported: progress bars and verbosity.
_QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",      # huggingface_hub and transformers' tqdm bars
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DASK_LOGGING__DISTRIBUTED": "error",     # nanny / worker warnings, also in spawned workers
}
_QUIET_LOGGERS = ("distributed", "timm", "transformers", "huggingface_hub",
                  "sentence_transformers", "open_clip", "numba", "fsspec", "urllib3")
_state: dict[str, object] = {"env_set": [], "handler": None}


def _ours(record: logging.LogRecord) -> bool:
    if record.name == "py.warnings":
        # captureWarnings formats "path:line: Category: message": ours if raised in our code.
        text = str(record.args[0]) if record.args else record.getMessage()
        return text.startswith(_OUR_DIRS)
    if record.name.split(".")[0] in OUR_PACKAGES:
        return True
    return record.pathname.startswith(_OUR_DIRS)


class _QuietFilter(logging.Filter):
    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.levelno >= logging.ERROR or _ours(record)


class _AboveTheBar(logging.Handler):
    """Writes each record with tqdm.write, so an active progress bar is redrawn below it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - a log line must never end the run
            self.handleError(record)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.name == "py.warnings":
            return "warning: " + text.strip().splitlines()[0]
        if not _ours(record):
            return f"{record.name}: {text}"  # third-party, shown with --verbose
        return text if record.levelno < logging.WARNING or text.startswith(
            ("failed:", "warning:", "error:")) else f"warning: {text}"


def configure(verbose: bool | None = None) -> None:
    """Set up stderr for a CLI run; called again (``--verbose``) it turns the chatter back on.

    ``verbose`` None reads ``AFFECT_VERBOSE`` (1/true/yes).
    """
    if verbose is None:
        verbose = os.environ.get("AFFECT_VERBOSE", "").lower() in ("1", "true", "yes")
    for name in _state["env_set"]:
        os.environ.pop(name, None)
    _state["env_set"] = []
    if not verbose:
        for name, value in _QUIET_ENV.items():
            if name not in os.environ:
                os.environ[name] = value
                _state["env_set"].append(name)
    root = logging.getLogger()
    if _state["handler"] is not None:
        root.removeHandler(_state["handler"])
    handler = _AboveTheBar()
    handler.setFormatter(_Format())
    handler.addFilter(_QuietFilter(verbose))
    root.addHandler(handler)  # with a handler on root, libraries' logging.warning() adds none
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    _state["handler"] = handler
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    logging.captureWarnings(True)


def verbose_option(command):
    """``-v/--verbose`` for a click command: show the libraries' log lines and bars too."""
    import click

    def turn_on(ctx, param, value: bool) -> None:
        if value:
            configure(verbose=True)

    return click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True,
                        callback=turn_on,
                        help="Also show third-party log lines and progress bars.")(command)


def is_verbose() -> bool:
    handler = _state["handler"]
    return bool(handler and any(getattr(f, "verbose", False) for f in handler.filters))


__all__ = ["OUR_PACKAGES", "configure", "is_verbose", "verbose_option"]
