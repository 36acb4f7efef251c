"""One trainer for every head: optimiser, schedule, AMP, checkpoints, logging, resume.

Run folder layout:

    RUN/config.json              head, config, store path, streams used (alias -> key)
    RUN/checkpoints/last.pt      written after every epoch (what --resume continues from)
    RUN/checkpoints/best.pt      the model of the best validation metric so far
    RUN/metrics.jsonl            one JSON record per line: kind = step | epoch | eval | time
                                 (the epoch's wall time); "epoch" counts from 1 (the epoch the
                                 record belongs to)
    RUN/curves.png               loss and validation metric curves
    RUN/eval-<split>.json        metrics of the best checkpoint on a split
    RUN/predictions/             default export folder of `predict`
    RUN/tb/                      the same scalars for TensorBoard (when it is installed)

A resumed run continues from the end of the last finished epoch and gives the same result as an
uninterrupted one: per-epoch batches come from an rng seeded by (seed, epoch), and the torch /
numpy / python RNG states are saved with the checkpoint.
"""

from __future__ import annotations

import errno
import json
import math
import os
import queue
import random
import shutil
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from heads.base import (
    SCHEDULES,
    Head,
    HeadConfig,
    check_config,
    config_from_dict,
    config_to_dict,
)
from heads.plots import plot_curves, read_metrics
from heads.profile import profile_record
from heads.registry import get_head
from heads.run_environment import run_environment
from heads.run_folder import (
    RunPaths,
    check_run_folder,
    check_store_location,
    read_run_config,
)
from heads.tb_log import ScalarLog
from heads.train_progress import EpochSummary, TrainProgress


def _user_error(message: str) -> Exception:
    from features_store.errors import UserError

    return UserError(message)


# --- seeds and devices ---------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> cuda when available, else cpu; a clear error for an unusable device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise _user_error(f"--device {device}: not a torch device (cpu, cuda, cuda:1)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise _user_error(f"--device {device}: CUDA is not available on this machine")
    return resolved


def _rng_state() -> dict[str, Any]:
    # Only types torch.load(weights_only=True) accepts: numpy's key array becomes a tensor.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state((saved["name"], saved["keys"].numpy().astype(np.uint32), saved["pos"],
                         saved["has_gauss"], saved["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A run checkpoint read with weights_only=True: tensors and plain values, never code.

    A run folder may come from someone else; a pickle that names any other Python object is
    refused with one line before anything in it runs.
    """
    import pickle

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # torch's own text first suggests weights_only=False; keep only the line naming what
        # the file tried to load.
        named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
        reason = (named or lines or [type(error).__name__])[0]
        raise _user_error(f"{path}: not a checkpoint this tool loads safely (only tensors and "
                          f"plain values are read, nothing is unpickled): {reason}") from None


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """torch.save through a temporary file and a rename: a reader (evaluate, a resume) sees the
    previous checkpoint or the new one, never half of one. A write that fails (torch reports a
    full disk as a RuntimeError from its zip writer) is one line."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None:
            raise
        free = shutil.disk_usage(path.parent).free
        if free < 64 << 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise _user_error(f"{path}: cannot write the checkpoint "
                          f"({lines[0] if lines else type(error).__name__})") from None


def load_weights(model: nn.Module, state: Any, path: Path) -> None:
    """A checkpoint's model weights into `model`; weights of another shape or head (a damaged
    or foreign run folder) are one line naming the file."""
    if not isinstance(state, dict):
        raise _user_error(f"{path}: holds no model weights")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise _user_error(f"{path}: weights do not fit this run's model "
                          f"({lines[-1] if lines else type(error).__name__})") from None


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator a head uses for one epoch's batches: same (seed, epoch), same batches."""
    return np.random.default_rng([seed, epoch])


# --- optimiser and schedule ------------------------------------------------------------------


def build_optimizer(config: HeadConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """Adam or AdamW with the config's betas and weight decay; groups may carry their own lr."""
    kwargs = {"lr": config.lr, "betas": tuple(config.betas), "weight_decay": config.weight_decay}
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, **kwargs)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    raise _user_error(f"optimizer={config.optimizer!r}: use adam or adamw")


class LrSchedule:
    """Sets each group's lr = base lr x warmup(step) x decay(epoch); see HeadConfig's docstring.

    Stepped by the trainer: `start_epoch(epoch)` before an epoch, `step()` after each optimiser
    step, `end_epoch(metric)` after validation (plateau). Its state goes into checkpoints.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: HeadConfig,
                 metric_mode: str = "max") -> None:
        if config.schedule not in SCHEDULES:
            raise _user_error(f"schedule={config.schedule!r}: use one of {', '.join(SCHEDULES)}")
        self.optimizer = optimizer
        self.config = config
        self.metric_mode = metric_mode
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.global_step = 0
        self.epoch = 0
        self.plateau_scale = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad = 0
        self._apply()

    def factor(self) -> float:
        config = self.config
        warm = 1.0
        if config.warmup_steps > 0 and self.global_step < config.warmup_steps:
            progress = self.global_step / config.warmup_steps
            warm = config.warmup_factor + (1.0 - config.warmup_factor) * progress
        if config.schedule == "linear":
            decay_epochs = max(config.epochs - config.constant_epochs, 0)
            past = max(0, self.epoch + 1 - config.constant_epochs)
            decay = 1.0 - past / (decay_epochs + 1)
        elif config.schedule in ("multistep", "warmup_step"):
            decay = config.gamma ** sum(1 for m in config.milestones if self.epoch >= m)
        elif config.schedule == "plateau":
            decay = self.plateau_scale
        else:
            decay = 1.0
        return warm * decay

    def _apply(self) -> None:
        factor = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._apply()

    def step(self) -> None:
        self.global_step += 1
        self._apply()

    def end_epoch(self, metric: float | None) -> None:
        if self.config.schedule != "plateau" or metric is None or math.isnan(metric):
            return
        sign = 1.0 if self.metric_mode == "max" else -1.0
        if self.plateau_best is None or sign * (metric - self.plateau_best) > 1e-4 * abs(
            self.plateau_best
        ):
            self.plateau_best = metric
            self.plateau_bad = 0
            return
        self.plateau_bad += 1
        if self.plateau_bad > self.config.plateau_patience:
            self.plateau_scale *= self.config.plateau_factor
            self.plateau_bad = 0

    def lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "base_lrs": self.base_lrs, "global_step": self.global_step, "epoch": self.epoch,
            "plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
            "plateau_bad": self.plateau_bad,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = list(state["base_lrs"])
        self.global_step = state["global_step"]
        self.epoch = state["epoch"]
        self.plateau_scale = state["plateau_scale"]
        self.plateau_best = state["plateau_best"]
        self.plateau_bad = state["plateau_bad"]
        self._apply()


# --- background batch preparation -----------------------------------------------------------


_DONE = object()


class _Prefetcher:
    """Runs a head's batch iterator in a thread, `depth` batches ahead (pinned on CUDA).

    Batch assembly is numpy slicing and copying, which releases the GIL, so it overlaps with
    the model's step instead of adding to it.
    """

    def __init__(self, batches: Iterable[Any], depth: int, pin: bool) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._pin = pin
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iter(batches),), daemon=True)
        self._thread.start()

    def _run(self, iterator: Iterator[Any]) -> None:
        try:
            for batch in iterator:
                if not self._put(_pin(batch) if self._pin else batch):
                    return
            self._put(_DONE)
        except BaseException as error:  # re-raised in the training thread
            self._put(error)

    def _put(self, item: Any) -> bool:
        """Queue `item` unless the consumer has gone (then return False and let the thread end)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _pin(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.pin_memory()
    if isinstance(obj, dict):
        return {k: _pin(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_pin(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_pin(v) for v in obj)
    return obj


# --- run folder ------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What `train` returns: where the run is and how it went."""

    run_dir: Path
    best_metric: float | None
    best_epoch: int | None
    epochs_done: int
    stopped_early: bool
    final_metrics: dict[str, Any] = field(default_factory=dict)
    data_wait_s: float = 0.0
    compute_s: float = 0.0
    steps: int = 0

    @property
    def data_wait_share(self) -> float:
        total = self.data_wait_s + self.compute_s
        return self.data_wait_s / total if total > 0 else 0.0


def open_store_for(store: Any, mode: str = "r") -> tuple[Any, str]:
    """Open `store` (a path/URL, or an already open store) and return (store, its location:
    an absolute path for a local store, so a run folder names it from any folder)."""
    if isinstance(store, str | Path):
        from features_store import open_store

        location = check_store_location(store)
        opened = open_store(location, mode=mode)
        return opened, opened.location
    return store, str(getattr(store, "location", getattr(store, "url", repr(store))))


def check_run_store(saved: dict[str, Any], store: Any, config_path: Path) -> None:
    """Refuse a store that is not the one the run trained on (another store met at the path the
    run recorded: a moved store, a same-named one elsewhere). Runs written before store ids
    were recorded, and stores without an id, are checked by nothing more than their path."""
    recorded = saved.get("store_id")
    found = getattr(store, "store_id", None)
    if recorded and found and recorded != found:
        raise _user_error(
            f"{config_path}: the run was trained on store {recorded} at {saved.get('store')}, "
            f"but {getattr(store, 'location', store)} is store {found}; pass --store with the "
            "run's store (or retrain on this one)")


def _resolve_recipe(head: Head, store: Any) -> dict[str, Any]:
    """alias -> stream key for every stream the head reads (provenance for config.json)."""
    recipe = head.recipe()
    streams: dict[str, str] = {}
    labels = set(recipe.labels)
    for alias in [*recipe.features, *recipe.labels]:
        try:
            info = store.resolve(alias)
        except Exception:
            raise _user_error(
                f"store {_store_location(store)}: head {head.name} needs stream {alias!r}, "
                f"which the store lacks (it has: {_aliases(store)}); make it with: "
                f"{_make_stream_command(store, alias, alias in labels)}"
            ) from None
        streams[alias] = getattr(info, "key", alias)
        if alias in recipe.features:
            _check_covers_training_split(head, store, alias, info)
    return {"streams": streams, "aux": list(recipe.aux)}


def _check_covers_training_split(head: Head, store: Any, ref: str, info: Any) -> None:
    """Refuse a stream that lacks clips of the training split when another stream of the same
    alias has more of them (the alias picked the newest, e.g. a partial `--limit` run), naming
    the key to use; warn when no stream has them all (some clips failed to extract)."""
    if not hasattr(store, "clip_ids") or not hasattr(info, "key"):
        return
    split = getattr(head.config, "train_split", "train")
    wanted = set(store.clip_ids(split))
    if not wanted:
        return
    have = len(wanted & store.committed_clip_ids(info))
    if have == len(wanted):
        return
    others = [(len(wanted & store.committed_clip_ids(o)), o) for o in store.streams()
              if o.key != info.key and info.alias in (o.alias, o.name)]
    best_count, best = max(others, key=lambda pair: pair[0], default=(0, None))
    if best is not None and best_count > have:
        how = f"stream key {best.key}"
        for name, value in vars(head.config).items():  # the config field that named the stream
            if value == ref:
                how = f"--set {name}={best.key}"
            elif isinstance(value, tuple | list) and ref in value:
                listed = ",".join(best.key if v == ref else str(v) for v in value)
                how = f"--set {name}={listed}"
        raise _user_error(
            f"store {_store_location(store)}: stream {ref!r} resolves to {info.key}, which has "
            f"{have} of the {len(wanted)} clips of split {split!r}; {best.key} has "
            f"{best_count}: use {how}")
    warnings.warn(f"stream {ref!r} ({info.key}) has {have} of the {len(wanted)} clips of split "
                  f"{split!r}; training on those", stacklevel=2)


def _aliases(store: Any) -> str:
    try:
        return ", ".join(sorted({s.alias for s in store.streams()})) or "no streams"
    except Exception:  # a store too broken to list: the missing stream is the message
        return "?"


def _make_stream_command(store: Any, alias: str, is_label: bool) -> str:
    """The `affect` command that writes a missing stream into this store."""
    dataset = (getattr(store, "attrs", None) or {}).get("dataset") or "DATASET"
    where = f"--dataset {dataset} --data-root DATA --store {_store_location(store)}"
    if is_label:
        return f"affect ingest {where}"
    return f"affect extract {where} --encoders {alias}"


def _store_location(store: Any) -> str:
    return str(getattr(store, "url", getattr(store, "path", "<store>")))


def _better(value: float, best: float | None, mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep only records of finished epochs (an interrupted epoch is re-run on resume)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("epoch", epochs_done + 1) <= epochs_done]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def _json_ready(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as JSON values: counts as ints, other scalars as floats, arrays (a confusion
    matrix) as nested lists."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            out[key] = int(value)  # a count (REGNN's speakers) stays a count in JSON and tables
        elif isinstance(value, float | np.number):
            out[key] = float(value)
        elif isinstance(value, np.ndarray | torch.Tensor):
            out[key] = value.tolist()
        else:
            out[key] = value
    return out


# --- training ---------------------------------------------------------------------------------


def train(
    head: Head,
    store: Any,
    out: str | Path,
    *,
    device: str | torch.device | None = "auto",
    resume: bool = False,
    progress: bool | TrainProgress = True,
    prefetch: int = 2,
    log_every: int = 20,
    stop_after: int | None = None,
) -> TrainResult:
    """Train `head` on `store` into the run folder `out`.

    `resume=True` continues from RUN/checkpoints/last.pt (model, optimiser, schedule, scaler,
    epoch, RNG states, best metric, head state). `stop_after` ends this call after that many
    epochs (the run can be resumed later, as after an interruption). `prefetch` = batches
    prepared ahead in a background thread (0: inline). `progress`: a line per epoch on stderr
    and a bar (or, in a log, timed lines) within it; False keeps only notes (where a resumed
    run continues); a `TrainProgress` to print elsewhere.
    """
    config = head.config
    reporter = (progress if isinstance(progress, TrainProgress)
                else TrainProgress(head.name, enabled=bool(progress)))
    paths = check_run_folder(out, resume)
    check_config(config)
    dev = resolve_device(device)

    seed_everything(config.seed)
    store_obj, store_location = open_store_for(store)
    if resume:  # one run, one store: its checkpoints continue only on the store they began on
        check_run_store(read_run_config(out), store_obj, paths.config)
    provenance = _resolve_recipe(head, store_obj)
    data = head.build_data(store_obj)
    provenance = _resolve_recipe(head, store_obj)  # a head may settle its recipe from the store
    paths.checkpoints.mkdir(parents=True, exist_ok=True)  # only once the inputs are known good
    model = head.build_model(data).to(dev)
    optimizer = build_optimizer(config, head.param_groups(model))
    clip_groups = head.clip_groups(model)
    watched = config.plateau_metric or head.metric_name
    schedule = LrSchedule(optimizer, config,
                          "min" if watched.endswith("loss") else head.metric_mode)
    amp_dtype = _amp_dtype(config, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_epoch, global_step = 0, 0
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_evals = 0
    if resume:
        checkpoint = load_checkpoint(paths.last, dev)
        load_weights(model, checkpoint.get("model"), paths.last)
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        scaler.load_state_dict(checkpoint["scaler"])
        head.load_extra_state(checkpoint.get("head_state", {}))
        start_epoch = checkpoint["epoch"]
        global_step = checkpoint["global_step"]
        best_metric = checkpoint["best_metric"]
        best_epoch = checkpoint["best_epoch"]
        bad_evals = checkpoint["bad_evals"]
        _set_rng_state(checkpoint["rng"])
        _truncate_metrics(paths.metrics, start_epoch)
        reporter.note(f"resuming after epoch {start_epoch} of {config.epochs} from {paths.last}"
                      + (f" (best {head.metric_name} {best_metric:.4f} at epoch "
                         f"{best_epoch + 1})" if best_metric is not None else ""))
    else:
        paths.metrics.write_text("")
    scalars = ScalarLog(paths.root / "tb", purge_step=global_step if resume else None)
    amp_name = str(amp_dtype).replace("torch.", "") if amp_dtype else "off"

    write_json(paths.config, {
        "head": head.name,
        "metric": head.metric_name, "metric_mode": head.metric_mode,
        "config": config_to_dict(config),
        **profile_record(config, head.approximations(data), head.paper_config(store_obj)),
        "store": store_location,
        "store_id": getattr(store_obj, "store_id", None),
        **provenance,
        "device": str(dev),
        "amp": amp_name,
        "effective": _effective_settings(head, data, amp_name),
        "torch": torch.__version__,
        "environment": run_environment(),
    })

    total_wait = total_compute = 0.0
    total_steps = 0
    stopped_early = False
    epochs_done = start_epoch
    last_epoch = config.epochs - 1
    end_epoch = config.epochs if stop_after is None else min(config.epochs,
                                                             start_epoch + stop_after)
    epoch_seconds: list[float] = []
    for epoch in range(start_epoch, end_epoch):
        epoch_started = time.perf_counter()
        schedule.start_epoch(epoch)
        head.on_epoch_start(epoch, data)
        model.train()
        batches = head.train_batches(data, epoch, epoch_rng(config.seed, epoch))
        n_batches = len(batches) if hasattr(batches, "__len__") else None
        source = _Prefetcher(batches, prefetch, dev.type == "cuda") if prefetch > 0 else batches
        shown = reporter.epoch(epoch + 1, config.epochs, n_batches)
        advance = shown.__enter__()
        epoch_loss, epoch_items, epoch_wait, epoch_compute = 0.0, 0, 0.0, 0.0
        optimizer.zero_grad(set_to_none=True)
        iterator = iter(source)
        iteration = 0
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                batch = head.to_device(batch, dev)
                t1 = time.perf_counter()
                with torch.autocast(dev.type, dtype=amp_dtype or torch.float32,
                                    enabled=amp_dtype is not None):
                    loss = head.training_step(model, batch)
                if not torch.isfinite(loss.detach()):
                    raise RuntimeError(f"{head.name}: non-finite loss at epoch {epoch}, "
                                       f"iteration {iteration}")
                scaler.scale(loss / config.grad_accum).backward()
                stepped = False
                if (iteration + 1) % config.grad_accum == 0:
                    _optimizer_step(clip_groups, optimizer, scaler, config)
                    schedule.step()
                    global_step += 1
                    stepped = True
                loss_value = float(loss.detach().float().item())  # syncs: compute time is real
                t2 = time.perf_counter()
                head.on_iteration_end(epoch, iteration, loss_value)
                epoch_wait += t1 - t0
                epoch_compute += t2 - t1
                epoch_loss += loss_value
                epoch_items += 1
                if stepped and global_step % log_every == 0:
                    record = {
                        "kind": "step", "epoch": epoch + 1, "step": global_step,
                        "loss": loss_value, "lr": schedule.lrs()[0],
                        "data_wait_s": t1 - t0, "compute_s": t2 - t1,
                    }
                    _append_jsonl(paths.metrics, record)
                    scalars.record(record, schedule.lrs())
                advance(loss_value)
                iteration += 1
            if iteration % config.grad_accum != 0:  # flush a partial accumulation
                _optimizer_step(clip_groups, optimizer, scaler, config)
                schedule.step()
                global_step += 1
        finally:
            shown.__exit__(None, None, None)
            if isinstance(source, _Prefetcher):
                source.close()
        total_wait += epoch_wait
        total_compute += epoch_compute
        total_steps += epoch_items
        busy = epoch_wait + epoch_compute
        train_loss = epoch_loss / max(epoch_items, 1)
        record = {
            "kind": "epoch", "epoch": epoch + 1, "step": global_step,
            "train_loss": train_loss, "lr": schedule.lrs()[0],
            "iterations": epoch_items, "data_wait_s": epoch_wait, "compute_s": epoch_compute,
            "data_wait_share": epoch_wait / busy if busy > 0 else 0.0,
            "steps_per_s": epoch_items / busy if busy > 0 else 0.0,
        }
        _append_jsonl(paths.metrics, record)
        scalars.record(record, schedule.lrs())

        metric_value: float | None = None
        watched_value: float | None = None
        metrics = None
        if (epoch + 1) % max(config.eval_every, 1) == 0 or epoch == last_epoch:
            metrics = evaluate_model(head, model, data, config.val_split)
            for name in (head.metric_name, watched):
                if name not in metrics:
                    raise _user_error(f"{head.name}: its validation metrics have no {name!r} "
                                      f"(they have {', '.join(sorted(metrics))})")
            metric_value = float(metrics[head.metric_name])
            watched_value = float(metrics[watched])
            improved = _better(metric_value, best_metric, head.metric_mode)
            bad_evals = 0 if improved else bad_evals + 1
            kept = _keeps(config.keep_checkpoint, epoch, last_epoch, improved)
            if kept:
                best_metric, best_epoch = metric_value, epoch
                save_checkpoint({"model": model.state_dict(), "epoch": epoch + 1,
                                 "metrics": _json_ready(metrics), "head": head.name,
                                 "head_state": head.extra_state()}, paths.best)
            head.on_evaluated(model, metrics, paths.checkpoints, epoch + 1)
            record = {
                "kind": "eval", "epoch": epoch + 1, "step": global_step, "split": config.val_split,
                "metrics": _json_ready(metrics), "best": kept,
            }
            _append_jsonl(paths.metrics, record)
            scalars.record(record)
        schedule.end_epoch(watched_value)
        epochs_done = epoch + 1
        save_checkpoint({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epochs_done, "global_step": global_step, "best_metric": best_metric,
            "best_epoch": best_epoch, "bad_evals": bad_evals, "rng": _rng_state(),
            "head_state": head.extra_state(), "head": head.name,
            "config": config_to_dict(config),
        }, paths.last)
        plot_curves(read_metrics(paths.metrics), paths.curves, head.metric_name,
                    head.plot_metrics)
        epoch_seconds.append(time.perf_counter() - epoch_started)
        # The wall time of each epoch (training, validation, checkpoints): the report's total.
        _append_jsonl(paths.metrics, {"kind": "time", "epoch": epoch + 1,
                                      "epoch_s": epoch_seconds[-1]})
        stopping = config.patience > 0 and bad_evals >= config.patience
        left = 0 if stopping else end_epoch - epoch - 1
        reporter.epoch_done(EpochSummary(
            epoch=epoch + 1, epochs=config.epochs, train_loss=train_loss,
            val_metrics=None if metrics is None else _json_ready(metrics),
            metric_name=head.metric_name, best_value=best_metric,
            best_epoch=None if best_epoch is None else best_epoch + 1,
            seconds=epoch_seconds[-1],
            eta_s=sum(epoch_seconds) / len(epoch_seconds) * left))
        if stopping:
            stopped_early = True
            break

    final_metrics: dict[str, Any] = {}
    if paths.best.exists() and (stopped_early or epochs_done == config.epochs):
        best = load_checkpoint(paths.best, dev)
        final_metrics = dict(best["metrics"])
        write_json(paths.eval_file(config.val_split),
                   {"split": config.val_split, "checkpoint": "best", "epoch": best["epoch"],
                    "metrics": final_metrics})
        scalars.hparams(config_to_dict(config), final_metrics, config.val_split, global_step)
    scalars.close()
    return TrainResult(
        run_dir=paths.root, best_metric=best_metric,
        best_epoch=None if best_epoch is None else best_epoch + 1, epochs_done=epochs_done,
        stopped_early=stopped_early, final_metrics=final_metrics, data_wait_s=total_wait,
        compute_s=total_compute, steps=total_steps,
    )


def _effective_settings(head: Head, data: Any, amp_name: str) -> dict[str, Any]:
    """Config fields whose running value differs from the config's: AMP is off on a CPU
    whatever `amp` says, and a head takes some values from the data (`effective_config`)."""
    requested = config_to_dict(head.config)
    running = {**head.effective_config(data)}
    if "amp" in requested:
        running["amp"] = amp_name
    return {k: v for k, v in running.items() if requested.get(k, v) != v}


def _keeps(rule: str, epoch: int, last_epoch: int, improved: bool) -> bool:
    """Whether the weights after `epoch` (0-based) become the run's result under `rule`
    (HeadConfig.keep_checkpoint): best on validation, the last epoch, or a fixed epoch."""
    if rule == "best":
        return improved
    if rule == "last":
        return True  # each evaluated epoch replaces the previous: the final one stays
    wanted = int(rule.split(":", 1)[1]) - 1
    return epoch == min(wanted, last_epoch)


def _amp_dtype(config: HeadConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or config.amp == "off":
        return None
    if config.amp == "bf16":
        return torch.bfloat16
    if config.amp == "fp16":
        return torch.float16
    raise _user_error(f"amp={config.amp!r}: use bf16, fp16 or off")


def _optimizer_step(clip_groups: list[list[nn.Parameter]], optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, config: HeadConfig) -> None:
    """Clip (each of the head's `clip_groups` to its own norm), step, update the scaler."""
    if config.grad_clip > 0:
        scaler.unscale_(optimizer)
        for params in clip_groups:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def evaluate_model(head: Head, model: nn.Module, data: Any, split: str) -> dict[str, Any]:
    """`head.evaluate` in eval mode without gradients (restores train mode afterwards)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return head.evaluate(model, data, split)
    finally:
        model.train(was_training)


def predict_model(head: Head, model: nn.Module, data: Any, split: str) -> Any:
    """`head.predict` in eval mode without gradients; NaN or infinite predictions (a diverged
    checkpoint) are an error, never exported as if they were results."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            predictions = head.predict(model, data, split)
    finally:
        model.train(was_training)
    bad = non_finite_count(predictions)
    if bad:
        raise _user_error(f"{head.name}: the model predicts {bad} NaN/Inf value(s) on split "
                          f"{split!r} (its weights diverged or are damaged); nothing exported")
    return predictions


def non_finite_count(obj: Any, depth: int = 0) -> int:
    """How many NaN/Inf floats are in predictions (arrays, tensors, and containers of them)."""
    if depth > 20:
        return 0
    if isinstance(obj, torch.Tensor):
        return int((~torch.isfinite(obj)).sum()) if obj.is_floating_point() else 0
    if isinstance(obj, np.ndarray):
        return int((~np.isfinite(obj)).sum()) if obj.dtype.kind in "fc" else 0
    if isinstance(obj, float):
        return 0 if math.isfinite(obj) else 1
    if isinstance(obj, dict):
        return sum(non_finite_count(v, depth + 1) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(non_finite_count(v, depth + 1) for v in obj)
    if hasattr(obj, "__dataclass_fields__"):
        return sum(non_finite_count(getattr(obj, name), depth + 1)
                   for name in obj.__dataclass_fields__)
    return 0


# --- loading finished runs ------------------------------------------------------------------


@dataclass
class LoadedRun:
    """A run folder opened again: head (with its config), data, model with the chosen weights."""

    paths: RunPaths
    head: Head
    data: Any
    model: nn.Module
    store: Any
    store_location: str
    checkpoint: str
    epoch: int


def head_from_run(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> Head:
    """The head of a run, with the run's saved config (optionally updated with `overrides`)."""
    saved = read_run_config(run_dir)
    cls = get_head(saved["head"])
    values = dict(saved["config"])
    values.update(overrides or {})
    return cls(config_from_dict(cls.config_cls, values))


def load_run(run_dir: str | Path, *, checkpoint: str = "best", store: Any = None,
             device: str | torch.device | None = "auto") -> LoadedRun:
    """Open a run for evaluation or prediction (best checkpoint, or last if there is no best)."""
    paths = RunPaths(Path(run_dir))
    saved = read_run_config(run_dir)
    head = head_from_run(run_dir)
    file = paths.best if checkpoint == "best" else paths.last
    if checkpoint == "best" and not file.exists():
        file = paths.last
    if not file.exists():
        raise _user_error(f"{paths.checkpoints}: no checkpoint to load (train first)")
    dev = resolve_device(device)
    store_obj, location = open_store_for(store if store is not None else saved["store"])
    if store is None:
        check_run_store(saved, store_obj, paths.config)
    data = head.build_data(store_obj)
    model = head.build_model(data).to(dev)
    state = load_checkpoint(file, dev)
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise _user_error(f"{file}: not a checkpoint of this tool (no epoch); the run folder is "
                          "damaged")
    load_weights(model, state.get("model"), file)
    head.load_extra_state(state.get("head_state", {}))
    model.eval()
    head.on_loaded(model, paths.checkpoints, file.stem)
    return LoadedRun(paths=paths, head=head, data=data, model=model, store=store_obj,
                     store_location=location, checkpoint=file.stem, epoch=int(state["epoch"]))


def run_fidelity(run_dir: str | Path) -> dict[str, Any]:
    """A run's profile, deviations from the paper and approximations, as its config.json
    recorded them (runs from before profiles existed: computed from their saved config)."""
    saved = read_run_config(run_dir)
    if "profile" in saved:
        return {key: saved.get(key, []) for key in ("profile", "deviations", "approximate")}
    return profile_record(head_from_run(run_dir).config)


def evaluate_run(run_dir: str | Path, split: str, *, store: Any = None,
                 device: str | torch.device | None = "auto") -> dict[str, Any]:
    """Metrics of a run's best checkpoint on `split`, also written to RUN/eval-<split>.json."""
    run = load_run(run_dir, store=store, device=device)
    metrics = evaluate_model(run.head, run.model, run.data, split)
    payload = {"split": split, "checkpoint": run.checkpoint, "epoch": run.epoch,
               **run_fidelity(run_dir), "metrics": _json_ready(metrics)}
    used = run.head.checkpoints_used()
    if used:  # outputs predicted with the head's own checkpoints, not `checkpoint`'s epoch
        payload["targets"] = used
    write_json(run.paths.eval_file(split), payload)
    return payload


# --- released checkpoints ---------------------------------------------------------------------


def import_run(head: Head, store: Any, official_file: str | Path, out: str | Path) -> Path:
    """A run folder in `out` holding a paper's released weights, mapped onto `head`'s model.

    The store gives the model's input sizes (and is the run's store for evaluate/predict); the
    file is read as tensors only (heads/official.py). Writes RUN/config.json (with the source
    file, its sha256 and every released key left unused with the reason) and
    RUN/checkpoints/best.pt; returns the run folder."""
    from heads.official import OfficialState, file_sha256

    paths = RunPaths(Path(out))
    if paths.config.exists() or paths.best.exists():
        raise _user_error(f"{paths.root}: already a run folder; choose a new --out")
    check_config(head.config)
    tensors = head.read_official(Path(official_file))  # before any write: a bad file leaves nothing
    store_obj, store_location = open_store_for(store)
    data = head.build_data(store_obj)
    provenance = _resolve_recipe(head, store_obj)
    model = head.build_model(data)
    mapping = OfficialState(tensors, model, str(official_file))
    head.import_official(mapping, model)
    model.load_state_dict(mapping.finish())
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "epoch": 0, "metrics": {}, "head": head.name,
                     "head_state": head.extra_state()}, paths.best)
    paths.metrics.write_text("")
    write_json(paths.config, {
        "head": head.name,
        "metric": head.metric_name, "metric_mode": head.metric_mode,
        "config": config_to_dict(head.config),
        **profile_record(head.config, head.approximations(data),
                         head.paper_config(store_obj)),
        "store": store_location,
        "store_id": getattr(store_obj, "store_id", None),
        **provenance,
        "device": "cpu", "amp": "off", "torch": torch.__version__,
        "imported": {"file": str(Path(official_file).resolve()),
                     "sha256": file_sha256(official_file),
                     "tensors": len(tensors), "ignored": mapping.ignored},
    })
    return paths.root
