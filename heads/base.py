"""The Head interface: what every head tells the shared trainer (heads/trainer.py).

A head is a class with

- a config dataclass (a subclass of `HeadConfig`) whose defaults are the paper's settings; the
  user overrides fields with `--set key=value` (parsed to the field's type by `apply_overrides`);
- class attributes `name`, `default_dataset`, `metric_name`, `metric_mode` ("max" or "min");
- hooks the trainer calls, in this order:

    head = HeadCls(config)
    data = head.build_data(store)              # reads nothing but the store, once
    model = head.build_model(data)             # an nn.Module (the trainer moves it to the device)
    groups = head.param_groups(model)          # optimiser parameter groups (per-group "lr" allowed)
    for epoch in range(config.epochs):
        head.on_epoch_start(epoch, data)
        for iteration, batch in enumerate(head.train_batches(data, epoch, rng)):
            batch = head.to_device(batch, device)
            loss = head.training_step(model, batch)      # scalar tensor (autocast on CUDA)
            ... backward / accumulation / clipping / optimiser + schedule step ...
            head.on_iteration_end(epoch, iteration, loss_value)
        metrics = head.evaluate(model, data, config.val_split)   # under no_grad, model.eval()
    predictions = head.predict(model, data, "test")
    head.export(predictions, data, "test", out_dir)

The trainer owns the optimiser, schedule, AMP, seeds, checkpoints and logging; a head owns its
data layout, batching (chunks with carried state, fixed iterations per epoch, ...), loss and
metric. State a head keeps across iterations (carried recurrent state, a loss threshold) lives on
the head instance; what must survive a resume goes through `extra_state`/`load_extra_state`.

Nothing here imports `extract` or `pipelines`: a head trains on a machine with only the store.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from heads.prediction_table import PredictionTable, series_tables

# The schedules the trainer implements (see heads/trainer.py `LrSchedule`).
SCHEDULES = ("constant", "linear", "warmup_step", "multistep", "plateau")


@dataclass
class HeadConfig:
    """Training settings every head has; a head's config subclasses this and changes defaults.

    Schedules (all stepped by the trainer; factors multiply each group's base lr):
      constant     lr stays at `lr` (after optional warmup).
      linear       `lr` for `constant_epochs` epochs, then linear decay towards 0 over the
                   remaining `epochs - constant_epochs` epochs (ABAW code: niter + niter_decay).
      warmup_step  linear warmup over `warmup_steps` optimiser steps from `warmup_factor * lr`,
                   then multiply by `gamma` at each epoch in `milestones` (REGNN).
      multistep    multiply by `gamma` at each epoch in `milestones` (MultiStepLR).
      plateau      multiply by `plateau_factor` after `plateau_patience` epochs without
                   improvement of the validation metric, or of `plateau_metric` when set
                   (ReduceLROnPlateau).
    `warmup_steps > 0` adds the warmup to any schedule.

    Profiles (heads/profile.py): the field defaults are the paper's released code (`profile`
    "paper"); a head's config lists its corrections in the class attribute `FIXED` (field ->
    corrected value), which `--set profile=fixed` applies at once.
    """

    # the paper's released behaviour, or our corrections (FIXED); recorded in every run
    profile: str = "paper"
    FIXED: ClassVar[dict[str, Any]] = {}

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    optimizer: str = "adamw"  # "adam" | "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"
    constant_epochs: int = 0
    warmup_steps: int = 0
    warmup_factor: float = 0.01
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    # the validation value `plateau` watches: "" is the head's own metric (in its mode); a
    # name ending in "loss" is minimised (the head's `score` must report it)
    plateau_metric: str = ""
    grad_clip: float = 0.0  # max grad-norm; 0 disables clipping
    grad_accum: int = 1  # micro-batches per optimiser step
    # "bf16" | "fp16" | "off" (fp32); only used on CUDA. Off by default: the released codes
    # train in fp32 (a head whose paper used autocast sets it)
    amp: str = "off"
    seed: int = 0
    patience: int = 0  # early stop after this many evaluations without improvement; 0 = never
    val_split: str = "val"
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    # which weights a run keeps as its result (RUN/checkpoints/best.pt): "best" on the
    # validation metric, "last" (the final epoch), or "epoch:N" (that epoch's snapshot; the
    # final epoch when the run is shorter), as a paper's released scripts pick
    keep_checkpoint: str = "best"


@dataclass
class Recipe:
    """Which store streams a head reads: feature streams and label streams (aliases or keys).

    The trainer resolves each through the store and records alias -> key in RUN/config.json, so
    a run says exactly which cached tensors it was trained on.
    """

    features: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    aux: list[str] = field(default_factory=list)  # aux arrays (e.g. appropriateness matrices)


class Head(ABC):
    """Base class of every head. Subclasses set the class attributes and implement the hooks."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[HeadConfig]] = HeadConfig
    default_dataset: ClassVar[str] = ""
    metric_name: ClassVar[str] = ""  # key of `evaluate`'s dict used for the best checkpoint
    paper: ClassVar[str] = ""  # the paper whose public code the defaults follow (`heads ls`)
    metric_mode: ClassVar[str] = "max"  # "max" or "min"
    plot_metrics: ClassVar[tuple[str, ...]] = ()  # drawn in curves.png beside metric_name

    def __init__(self, config: HeadConfig | None = None) -> None:
        self.config = config if config is not None else self.config_cls()

    # --- what it reads -------------------------------------------------------------------
    @abstractmethod
    def recipe(self) -> Recipe:
        """Streams and labels this head reads (may depend on the config, e.g. chosen features)."""

    # --- data and model ------------------------------------------------------------------
    @abstractmethod
    def build_data(self, store: Any) -> Any:
        """Load everything training and evaluation need from `store` (and nothing else).

        Returns a head-defined object (arrays in RAM, split indices, normalisation stats...).
        Called once per run; must be deterministic so `evaluate --run` rebuilds the same data.
        """

    @abstractmethod
    def build_model(self, data: Any) -> nn.Module:
        """Build the model (input sizes come from `data`); the trainer moves it to the device."""

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimiser parameter groups; a group may set its own "lr" (else `config.lr`)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def clip_groups(self, model: nn.Module) -> list[list[nn.Parameter]]:
        """Parameter groups whose gradients the trainer clips to `grad_clip` each on its own
        (a paper that clips each sub-network separately); default: one group, the whole model."""
        return [list(model.parameters())]

    # --- training --------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, data: Any) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Called before each epoch's batches (reset per-epoch state here)."""

    @abstractmethod
    def train_batches(self, data: Any, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        """Yield the training batches of one epoch, in order.

        Use `rng` (seeded by the trainer from (seed, epoch), so a resumed run draws the same
        batches) for all shuffling and sampling, never torch's global RNG: the trainer runs this
        iterator in a background thread a few batches ahead of training, so it must not read
        state that `training_step` changes (carried recurrent state belongs in training_step).
        Batches should be CPU tensors (numpy arrays are fine if `to_device` handles them).
        If the returned object has `len()`, the progress bar shows the total.
        """

    @abstractmethod
    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Forward one batch and return the scalar loss to minimise (the trainer backprops)."""

    def on_iteration_end(self, epoch: int, iteration: int, loss: float) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Called after each training batch with its loss value (e.g. REGNN's threshold)."""

    def to_device(self, batch: Any, device: torch.device) -> Any:
        """Move a batch to `device`: tensors in (nested) dicts, lists and tuples."""
        return move_to_device(batch, device)

    # --- evaluation and prediction -----------------------------------------------------------
    @abstractmethod
    def predict(self, model: nn.Module, data: Any, split: str) -> Any:
        """Predictions for every clip of `split` (head-defined; usually clip_id -> array).

        The trainer calls this under `torch.no_grad()` with `model.eval()`.
        """

    @abstractmethod
    def score(self, predictions: Any, data: Any, split: str) -> dict[str, Any]:
        """Metrics of `predictions` against the split's labels; must contain `metric_name`.

        Values are floats; arrays (a confusion matrix) are allowed too and are saved as lists
        in RUN/eval-<split>.json and metrics.jsonl (only floats are plotted).
        """

    def evaluate(self, model: nn.Module, data: Any, split: str) -> dict[str, Any]:
        """Metrics on `split` (default: `score(predict(...))`)."""
        return self.score(self.predict(model, data, split), data, split)

    @abstractmethod
    def export(self, predictions: Any, data: Any, split: str, out_dir: Path) -> list[Path]:
        """Write `predictions` into `out_dir` in the head's official format; return the files."""

    def predict_data(self, trained: Any, store: Any, split: str) -> Any:
        """Data to predict every clip of `split` in `store`, labelled or not.

        `trained` is what `build_data` returned for the run's own store: what training learned
        from its data (normalisation statistics, class names, the text tower's source) comes
        from there, never from the clips being predicted, so a clip gets the same prediction
        whichever store or split it sits in. `store` may be another store with the same
        streams (`affect predict --media` extracts into a scratch store).
        """
        from features_store.errors import UserError

        raise UserError(f"head {self.name!r} cannot predict clips outside the splits it loads "
                        "for training")

    def prediction_tables(self, predictions: Any, data: Any, split: str
                          ) -> dict[str, PredictionTable]:
        """`predictions` as one table per clip (CSV and plot of `affect predict --media`).

        Default: clip id -> [T, C] array, one row per frame, times unknown.
        """
        return series_tables(predictions, None, None)

    def ensemble(self, predictions: Sequence[Any]) -> Any:
        """Combine several runs' predictions into one; heads that support ensembles override."""
        from features_store.errors import UserError

        raise UserError(f"head {self.name!r} does not support ensembles of runs")

    def effective_config(self, data: Any) -> dict[str, Any]:
        """Config fields whose value in the run comes from the data rather than the config
        (an input dim read from the store's stream, the clip length the store holds): field ->
        the value that ran. The trainer records those that differ from the config in
        config.json's `effective`, so a report shows what ran, not what was requested."""
        return {}

    # --- checkpoints a head keeps besides the trainer's ---------------------------------------
    def on_evaluated(self, model: nn.Module, metrics: dict[str, Any], checkpoints: Path,  # noqa: B027 (optional hook, no-op by default)
                     epoch: int) -> None:
        """Called by the trainer after each validation (epoch counted from 1), with the run's
        checkpoint folder: e.g. to keep the best epoch of each target separately."""

    def on_loaded(self, model: nn.Module, checkpoints: Path, checkpoint: str) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Called when a run is opened for evaluation or prediction, after `model` got the
        weights of `checkpoint` ("best" or "last"); a head may load its own checkpoints."""

    def checkpoints_used(self) -> dict[str, dict[str, Any]]:
        """Per output (target), the checkpoint file and epoch its predictions come from when a
        head loaded its own in `on_loaded`; empty when every output uses the run's checkpoint.
        `evaluate` reports it, so a number is never attributed to the wrong epoch."""
        return {}

    # --- fidelity to the paper -------------------------------------------------------------
    def approximations(self, data: Any) -> list[str]:
        """What the paper did that this run can only approximate from cached features (e.g.
        "no augmentation" when the store holds no augmented views), given what `build_data`
        returned. Recorded in RUN/config.json as `approximate`; empty means exact."""
        return []

    def read_official(self, path: Path) -> dict[str, torch.Tensor]:
        """The tensors of a released checkpoint given as `path` (default: that one file, read
        as tensors only); a head whose paper saves one file per sub-network reads the siblings."""
        from heads.official import read_official_file

        return read_official_file(path)

    def paper_config(self, store: Any) -> HeadConfig:
        """The paper profile's config, settled from `store` as this run's was (a head that
        fills fields from the store, such as a dataset's preset batch size, does the same
        here), so that `deviations` lists only what the user or the profile changed."""
        return type(self.config)()

    def import_official(self, official: Any, model: nn.Module) -> None:
        """Map a paper's released state dict onto `model` (`affect import-run`).

        `official` is a `heads.official.OfficialState`: copy each released tensor to our key
        with `official.copy(ours, theirs)`, and name every released key the paper's settings
        never use with `official.ignore(theirs, reason)`; the caller checks that every key was
        used or ignored and every shape fits."""
        from features_store.errors import UserError

        raise UserError(f"head {self.name!r} cannot import a released checkpoint")

    # --- resumable head state ---------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Head state that a checkpoint must keep besides the model (e.g. a loss threshold)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Restore what `extra_state` returned."""


# --- config helpers -----------------------------------------------------------------------


def move_to_device(obj: Any, device: torch.device) -> Any:
    """Recursively move tensors in dicts/lists/tuples to `device` (non-blocking from pinned)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [move_to_device(v, device) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(move_to_device(v, device) for v in obj)
    return obj


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parse `text` into the type `annotation` (int, float, bool, str, tuples, Optional)."""
    from features_store.errors import UserError

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("none", "null", "") and type(None) in args:
            return None
        last_error: Exception | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(text, arg, key)
            except UserError as error:
                last_error = error
        raise last_error if last_error else UserError(f"--set {key}: cannot parse {text!r}")
    if origin in (tuple, list):
        parts = [p for p in text.replace(";", ",").split(",") if p.strip() != ""]
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(parts)
        elif origin is tuple:
            if len(parts) != len(args):
                raise UserError(f"--set {key}={text}: expected {len(args)} comma-separated values")
            item_types = list(args)
        else:
            item_types = [args[0] if args else str] * len(parts)
        values = [_parse_value(p.strip(), t, key) for p, t in zip(parts, item_types)]
        return tuple(values) if origin is tuple else values
    try:
        if annotation is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
        if annotation is str:
            return text
    except ValueError:
        name = getattr(annotation, "__name__", str(annotation))
        raise UserError(f"--set {key}={text}: not a valid {name}") from None
    raise UserError(f"--set {key}: field type {annotation!r} cannot be set from the command line")


def apply_overrides(config: HeadConfig, overrides: Iterable[str]) -> HeadConfig:
    """Return a copy of `config` with `key=value` overrides applied, values parsed to field types.

    Tuples are comma-separated (`--set milestones=10,20`); `none` sets an Optional field to None.
    Unknown keys raise UserError listing the config's fields.
    """
    from features_store.errors import UserError
    from heads.profile import profile_values

    hints = typing.get_type_hints(type(config))
    names = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        pairs.append((key.strip().replace("-", "_"), text))
    # a profile first, whatever its place on the command line: single fields override it
    for key, text in pairs:
        if key == "profile":
            config = dataclasses.replace(config, **profile_values(type(config), text.strip()))
    for key, text in pairs:
        if key == "profile":
            continue
        if key not in names:
            known = ", ".join(sorted(names))
            raise UserError(f"--set {key}: unknown field of {type(config).__name__} ({known})")
        changes[key] = _parse_value(text.strip(), hints[key], key)
    return check_config(dataclasses.replace(config, **changes))


# Seeds go to torch, numpy and random alike; numpy takes 0..2**32-1.
MAX_SEED = 2**32 - 1
# Far above any learning rate that trains anything; larger ones overflow the optimiser's state.
MAX_LR = 10.0
# Caps on sizes and layer counts: far above any head's paper setting, below what exhausts memory
# before the first step.
MAX_SIZE = 1 << 16
MAX_LAYERS = 256


def whole_in(low: int, high: int | None = None) -> Any:
    """A test for an integer setting in [low, high] (no upper end when high is None)."""
    return lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= low
                      and (high is None or v <= high))


def number_in(low: float, high: float | None = None, low_open: bool = False) -> Any:
    """A test for a finite number in [low, high] (or (low, high] with low_open)."""
    def test(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
            return False
        above = v > low if low_open else v >= low
        return above and (high is None or v <= high)
    return test


def fraction(v: Any) -> bool:
    """A rate in [0, 1): dropout, a share."""
    return number_in(0, 1)(v) and v < 1


def one_of(*choices: Any) -> Any:
    return lambda v: v in choices


def any_text(v: Any) -> bool:
    """A free-form name (a stream alias, a split): any string, checked where it is used."""
    return isinstance(v, str)


def a_flag(v: Any) -> bool:
    return isinstance(v, bool)


# The shared training settings' valid ranges: (field, test, what the value must be).
CONFIG_RULES: tuple[tuple[str, Any, str], ...] = (
    ("epochs", lambda v: v >= 1, "at least 1"),
    ("batch_size", lambda v: v >= 1, "at least 1"),
    ("lr", number_in(0, MAX_LR), f"a learning rate in [0, {MAX_LR:g}]"),
    ("betas", lambda v: (isinstance(v, tuple | list) and len(v) == 2
                         and all(number_in(0, 1)(b) and b < 1 for b in v)),
     "two numbers in [0, 1), e.g. 0.9,0.999"),
    ("seed", whole_in(0, MAX_SEED), f"an integer in 0..{MAX_SEED}"),
    ("milestones", lambda v: all(whole_in(0)(m) for m in v), "epochs >= 0"),
    ("val_split", lambda v: isinstance(v, str) and v.strip() != "", "a split name"),
    ("plateau_metric", any_text, "a metric name, or empty for the head's own"),
    ("weight_decay", lambda v: v >= 0, ">= 0"),
    ("constant_epochs", lambda v: v >= 0, ">= 0"),
    ("warmup_steps", lambda v: v >= 0, ">= 0"),
    ("warmup_factor", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("gamma", lambda v: v > 0, "> 0"),
    ("plateau_factor", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("plateau_patience", lambda v: v >= 0, ">= 0"),
    ("grad_clip", lambda v: v >= 0, ">= 0 (0 disables clipping)"),
    ("grad_accum", lambda v: v >= 1, "at least 1"),
    ("patience", lambda v: v >= 0, ">= 0 (0 never stops early)"),
    ("eval_every", lambda v: v >= 1, "at least 1"),
    ("optimizer", lambda v: v in ("adam", "adamw"), "adam or adamw"),
    ("schedule", lambda v: v in SCHEDULES, " or ".join(SCHEDULES)),
    ("amp", lambda v: v in ("bf16", "fp16", "off"), "bf16, fp16 or off"),
    ("profile", lambda v: v in ("paper", "fixed"), "paper or fixed"),
    ("keep_checkpoint", lambda v: v in ("best", "last") or _is_epoch_choice(v),
     "best, last or epoch:N (N >= 1)"),
)


def _is_epoch_choice(value: str) -> bool:
    name, _, number = str(value).partition(":")
    return name == "epoch" and number.isdigit() and int(number) >= 1


def check_config(config: HeadConfig) -> HeadConfig:
    """`config` itself, or a one-line UserError naming the first field out of its range.

    A head's config may widen or add rules with a `RANGE_RULES` class attribute
    ({field: (test, what the value must be)}), e.g. where 0 means "the paper's value"."""
    from features_store.errors import UserError

    rules = {name: (valid, expected) for name, valid, expected in CONFIG_RULES}
    rules.update(getattr(type(config), "RANGE_RULES", {}))
    for name, (valid, expected) in rules.items():
        value = getattr(config, name)
        bad_number = isinstance(value, float) and not np.isfinite(value)
        try:
            ok = not bad_number and valid(value)
        except (TypeError, ValueError):  # a value of the wrong type (an edited config.json)
            ok = False
        if not ok:
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise UserError(f"{name}={shown}: must be {expected} (--set {name}=...)")
    return config


def unruled_fields(config_cls: type[HeadConfig]) -> list[str]:
    """Fields of a head config without a range rule (every field must have one)."""
    rules = {name for name, _, _ in CONFIG_RULES} | set(getattr(config_cls, "RANGE_RULES", {}))
    return [f.name for f in dataclasses.fields(config_cls) if f.name not in rules]


def config_to_dict(config: HeadConfig) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type[HeadConfig], values: Mapping[str, Any]) -> HeadConfig:
    """Rebuild a config from `config_to_dict` output (lists back to tuples; unknown keys kept out).

    Keys the class no longer has are ignored so old runs still load after a field is removed.
    """
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        annotation = hints[f.name]
        if isinstance(value, list) and _is_tuple_type(annotation):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _is_tuple_type(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple_type(a) for a in typing.get_args(annotation))
    return False
