"""One self-contained HTML page per run: config, stream provenance, curves, the head's plot.

Images are PNGs embedded as base64 data URIs, so the page is one file that opens anywhere (no
server, no network). The head's plot is chosen by what its predictions are:

- classes (per-clip class ids or class scores, or a confusion matrix among the head's metrics):
  a confusion matrix, rows = truth (RAER, IEMOCAP, MELD, ... any classification head);
- valence/arousal (two columns): a scatter of prediction against truth per dimension (TRM,
  the Aff-Wild2 family);
- generated reactions [samples, T, channels] (REGNN): a few speakers' listener reaction channels
  over time, ground truth against the generated samples.

Truth comes from the store's label stream the head names in its recipe (REGNN's from the
listener clips the head pairs with each speaker), so the page shows what the head was scored on.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

INVALID_LABEL = -5.0  # Aff-Wild2 marks unlabelled frames with -5


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- the head's plot ------------------------------------------------------------------------


def confusion_figure(matrix: np.ndarray, classes: list[str] | None, title: str) -> str:
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(matrix)
    names = classes if classes and len(classes) == n else [str(i) for i in range(n)]
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.7 * n))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


LABEL_RANGE = (-1.0, 1.0)  # valence and arousal labels lie in [-1, 1]


def va_axis_limits(*arrays: np.ndarray) -> tuple[float, float]:
    """Axis limits holding the label range and every finite point: predictions outside
    [-1, 1] (an untrained or diverged model) must be seen, not cut off the plot."""
    values = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in arrays])
    values = values[np.isfinite(values)]
    low = min(LABEL_RANGE[0], float(values.min())) if len(values) else LABEL_RANGE[0]
    high = max(LABEL_RANGE[1], float(values.max())) if len(values) else LABEL_RANGE[1]
    margin = 0.025 * (high - low)
    return low - margin, high + margin


def _label_square(ax) -> None:
    from matplotlib.patches import Rectangle

    low, high = LABEL_RANGE
    ax.add_patch(Rectangle((low, low), high - low, high - low, fill=False, ls=":", lw=0.8,
                           ec="grey", label="label range [-1, 1]"))


def va_scatter_figure(pred: np.ndarray, truth: np.ndarray, title: str,
                      names: tuple[str, str] = ("valence", "arousal")) -> str:
    return _png(va_scatter_axes(pred, truth, title, names))


def va_scatter_axes(pred: np.ndarray, truth: np.ndarray, title: str,
                    names: tuple[str, str] = ("valence", "arousal")):
    """Prediction against truth per dimension, and both in the valence-arousal plane, on axes
    that hold every point, with the label range [-1, 1] marked."""
    plt = _pyplot()
    limits = va_axis_limits(pred, truth)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for k, ax in enumerate(axes[:2]):
        ax.scatter(truth[:, k], pred[:, k], s=6, alpha=0.5)
        ax.plot(limits, limits, "k--", lw=0.8)
        _label_square(ax)
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)
        ax.set_xlabel(f"true {names[k]}")
        ax.set_ylabel(f"predicted {names[k]}")
        ax.set_aspect("equal")
    ax = axes[2]
    ax.scatter(truth[:, 0], truth[:, 1], s=6, alpha=0.4, label="truth")
    ax.scatter(pred[:, 0], pred[:, 1], s=6, alpha=0.4, label="prediction")
    _label_square(ax)
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_aspect("equal")
    ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def reactions_figure(truths: list[np.ndarray], samples: list[np.ndarray], speakers: list[str],
                     channels: list[int], channel_names: list[str], title: str) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(len(speakers), len(channels), squeeze=False,
                             figsize=(3.6 * len(channels), 2.2 * len(speakers)))
    for row, (truth, generated, speaker) in enumerate(zip(truths, samples, speakers)):
        for col, channel in enumerate(channels):
            ax = axes[row][col]
            for s, sample in enumerate(generated[:3]):
                ax.plot(sample[:, channel], lw=0.7, alpha=0.6, color="tab:orange",
                        label="generated" if s == 0 else None)
            ax.plot(truth[:, channel], lw=1.2, color="black", label="listener (truth)")
            if row == 0:
                ax.set_title(channel_names[col], fontsize=9)
            if col == 0:
                ax.set_ylabel(speaker[-24:], fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def _square_matrix(metrics: dict[str, Any]) -> tuple[str, np.ndarray] | None:
    for name, value in metrics.items():
        if isinstance(value, list | np.ndarray):
            array = np.asarray(value)
            if array.ndim == 2 and array.shape[0] == array.shape[1] and array.shape[0] > 1:
                return name, array
    return None


def head_plot(run: Any, split: str) -> tuple[str, str, str]:
    """(section title, base64 PNG, caption) of the plot that fits the run's head on `split`."""
    from heads.metrics import confusion_matrix
    from heads.trainer import predict_model

    head, data, store = run.head, run.data, run.store
    predictions = predict_model(head, run.model, data, split)
    try:
        metrics = head.score(predictions, data, split)
    except Exception:  # noqa: BLE001 - an unscorable split still gets its plot if truth exists
        metrics = {}
    if hasattr(data, "split") and all(np.ndim(v) == 3 for v in predictions.values()):
        return _reactions(data, predictions, split)
    recipe = head.recipe()
    label = store.resolve(recipe.labels[0]) if recipe.labels else None
    found = _square_matrix(metrics)
    classes = (label.extra.get("classes") if label is not None else None) or None
    if found is not None:
        name, matrix = found
        return ("Confusion matrix", confusion_figure(matrix, classes, f"{split}: {name}"),
                f"{int(matrix.sum())} {split} items; rows are the true class, colour the row "
                "share, numbers the counts.")
    if label is None:
        raise ValueError("the head names no label stream to compare predictions with")
    clip_ids = [c for c in predictions if c in store.committed_clip_ids(label)]
    if not clip_ids:
        raise ValueError(f"no {split} clip has {label.alias} labels")
    truth = store.load_stream(label, clip_ids)
    if np.issubdtype(np.dtype(label.dtype), np.integer) or classes:
        y_true = np.array([int(np.asarray(truth.clip(c)).reshape(-1)[0]) for c in clip_ids])
        y_pred = np.array([_class_of(predictions[c]) for c in clip_ids])
        n = max(len(classes or []), int(y_true.max()) + 1, int(y_pred.max()) + 1)
        matrix = confusion_matrix(y_true, y_pred, n)
        return ("Confusion matrix", confusion_figure(matrix, classes, f"{split}: {label.alias}"),
                f"{len(clip_ids)} {split} clips; rows are the true class, colour the row share, "
                "numbers the counts.")
    pred_rows, true_rows = [], []
    for c in clip_ids:
        pred = np.asarray(predictions[c], np.float64).reshape(-1, np.shape(predictions[c])[-1])
        target = np.asarray(truth.clip(c), np.float64)
        if len(target) == 1:  # one label per clip: the clip's prediction is its last row
            pred_rows.append(pred[-1:, :2])
            true_rows.append(target[:, :2])
        else:
            n = min(len(pred), len(target))
            keep = ~np.any(np.isclose(target[:n], INVALID_LABEL), axis=1)
            pred_rows.append(pred[:n][keep, :2])
            true_rows.append(target[:n][keep, :2])
    pred_all, true_all = np.concatenate(pred_rows), np.concatenate(true_rows)
    columns = label.extra.get("columns") or ["valence", "arousal"]
    unit = "clips" if all(len(p) == 1 for p in pred_rows) else "frames"
    outside = int(np.sum(np.any(np.abs(pred_all) > LABEL_RANGE[1], axis=1)))
    return ("Valence-arousal: prediction against truth",
            va_scatter_figure(pred_all, true_all, f"{split}: {label.alias}",
                              (columns[0], columns[1])),
            f"{len(pred_all)} {split} {unit} of {len(clip_ids)} clips; the dashed line is a "
            "perfect prediction, the dotted square the label range [-1, 1]"
            + (f"; {outside} of the predictions fall outside it" if outside else "") + ".")


def _class_of(prediction: Any) -> int:
    array = np.asarray(prediction)
    return int(array.reshape(-1)[0]) if array.size == 1 else int(np.argmax(array.reshape(-1)))


def _reactions(data: Any, predictions: dict[str, np.ndarray], split: str,
               n_speakers: int = 3) -> tuple[str, str, str]:
    react = data.split(split)
    seqs = react.sequences
    speakers, truths, samples = [], [], []
    for k in range(min(n_speakers, len(react.speaker))):
        clip_id = seqs.clip_ids[react.speaker[k]]
        generated = np.asarray(predictions[clip_id])
        listener = react.listener[k]
        n = min(int(seqs.lengths[listener]), generated.shape[1])
        truths.append(seqs.labels[react.rows(listener, 0, n)])
        samples.append(generated[:, :n])
        speakers.append(clip_id)
    channels = [0, 15, 16, 17]  # an AU, valence, arousal, the first expression probability
    names = ["AU (channel 0)", "valence (15)", "arousal (16)", "expression 1 (17)"]
    channels = [c for c in channels if c < truths[0].shape[1]]
    return ("Reactions over time",
            reactions_figure(truths, samples, speakers, channels, names[: len(channels)],
                             f"{split}: listener reaction, truth and generated"),
            f"{len(speakers)} {split} speakers; black: the listener's real reaction, orange: up "
            "to three of the generated samples.")


# --- the page -------------------------------------------------------------------------------


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_text(v))}</td></tr>"
                    for k, v in rows)
    return f"<table>{cells}</table>"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) or "-"
    return str(value)


def _key(key: str) -> str:
    """A stream key on one line (it is one token; wrapped, it took five lines)."""
    return f"<code class=key>{html.escape(key)}</code>"


def random_streams(store: Any, streams: dict[str, str]) -> list[str]:
    """Aliases of the run's streams extracted with random weights (smoke runs)."""
    found = []
    for alias, key in streams.items():
        try:
            info = store.resolve(key)
        except Exception:  # noqa: BLE001 - a missing stream is reported in the provenance
            continue
        if info.extra.get("random_weights") or info.weights == "random":
            found.append(alias)
    return found


def _provenance(store: Any, streams: dict[str, str]) -> str:
    """One small table per stream: a row per fact, preprocessing a row per setting."""
    blocks = []
    for alias, key in streams.items():
        title = f"<h3>{html.escape(alias)}</h3>"
        try:
            info = store.resolve(key)
        except Exception as error:  # noqa: BLE001 - the page says what is missing
            blocks.append(f"{title}<p>{_key(key)}</p><p class=note>not in the store: "
                          f"{html.escape(str(error))}</p>")
            continue
        weights = info.weights or "-"
        if info.extra.get("random_weights") or info.weights == "random":
            weights = f"RANDOM ({weights})"
        rate = "per clip" if info.frame_shift_s is None else f"{1 / info.frame_shift_s:.3g} Hz"
        rows = [("kind", info.kind), ("dim", f"{info.dim} x {info.dtype}"), ("rate", rate),
                ("weights", weights), ("weights sha256", info.weights_sha256 or "-"),
                ("code version", info.code_version or "-"),
                *((f"preprocessing: {name}", value)
                  for name, value in (info.preprocessing or {}).items())]
        cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_text(v))}</td></tr>"
                        for k, v in rows)
        blocks.append(f"{title}<table><tr><th>key</th><td>{_key(info.key)}</td></tr>"
                      f"{cells}</table>")
    return "".join(blocks)


def _config_rows(saved: dict[str, Any]) -> list[tuple[str, str]]:
    """The config as it ran: a value the run took from its data or device (REGNN's input dims,
    AMP off on a CPU) replaces the requested one, which is named beside it."""
    effective = dict(saved.get("effective") or {})
    if "effective" not in saved and "amp" in saved and "amp" in saved["config"]:
        effective["amp"] = saved["amp"]  # runs from before `effective` was recorded
    rows = []
    for name, requested in sorted(saved["config"].items()):
        if name in effective and effective[name] != requested:
            rows.append((name, f"{_text(effective[name])} (requested {_text(requested)})"))
        else:
            rows.append((name, _text(requested)))
    return rows


def _wall_time(records: list[dict[str, Any]]) -> float | None:
    seconds = [r["epoch_s"] for r in records if r.get("kind") == "time" and "epoch_s" in r]
    return sum(seconds) if seconds else None


def _run_rows(root: Path, saved: dict[str, Any], row: Any,
              records: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """How the run was made: command, code, machine, time, profile (old runs: `-`)."""
    from features_store.progress import duration_text

    environment = saved.get("environment") or {}
    wall = _wall_time(records)
    rows: list[tuple[str, Any]] = [
        ("run folder", str(root)), ("head", saved["head"]), ("dataset", row.dataset or "-"),
        ("store", saved.get("store", "-")),
        ("profile", row.profile),  # runs from before profiles: "paper" (pipelines/runs.py)
        ("deviations from the paper", ", ".join(row.deviations) or "none"),
        ("approximate", ", ".join(row.approximate) or "nothing"),
    ]
    rows += [
        ("seed", saved["config"].get("seed", "-")),
        ("epochs done", f"{row.epochs_done} of {row.epochs}"),
        ("best", "-" if row.best_value is None else
         f"{row.val_split} {row.metric} {row.best_value:.4g} (epoch {row.best_epoch})"),
        ("test", "-" if row.test_value is None else f"{row.metric} {row.test_value:.4g}"),
        ("wall time", duration_text(wall) if wall is not None else "-"),
        ("command", environment.get("command") or "-"),
        ("affect version", environment.get("affect_version") or "-"),
        ("git commit", environment.get("git_commit") or "-"),
        ("host", environment.get("host") or "-"),
        ("device", saved.get("device", "-")), ("amp", saved.get("amp", "-")),
        ("torch", saved.get("torch", "-")), ("updated", row.updated),
    ]
    return rows


def headline(row: Any) -> str:
    """The run's result in words, naming the metric: `test FRC 3.983 (best val FRC 3.5 at
    epoch 4)`."""
    parts = []
    if row.test_value is not None:
        parts.append(f"test {row.metric} {row.test_value:.4g}")
    if row.best_value is not None:
        best = f"{row.val_split} {row.metric} {row.best_value:.4g} at epoch {row.best_epoch}"
        parts.append(f"(best {best})" if parts else f"best {best}")
    return " ".join(parts) or "not evaluated yet"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #ccc;padding:2px 6px;
text-align:left;font-size:0.85em;vertical-align:top}code.key{white-space:nowrap}
img{max-width:100%;border:1px solid #eee}.note{color:#a40}
.banner{background:#c00;color:#fff;font-weight:bold;padding:0.6em 1em;margin:0 0 1em}"""


def build_report(run_dir: str | Path, out: str | Path | None = None, *, split: str | None = None,
                 device: str = "cpu") -> Path:
    """Write the run's HTML page (default RUN/report.html) and return its path."""
    from heads.plots import plot_curves, read_metrics
    from heads.trainer import load_run, read_run_config
    from pipelines.runs import read_run

    root = Path(run_dir)
    saved = read_run_config(root)
    row = read_run(root)
    records = read_metrics(root / "metrics.jsonl")
    out_path = Path(out) if out else root / "report.html"
    result = headline(row)
    parts = [f"<h1>Run {html.escape(root.name)}: {html.escape(saved['head'])}, "
             f"{html.escape(result)}</h1>",
             _table(_run_rows(root, saved, row, records))]

    evals = sorted(root.glob("eval-*.json"))
    if evals:
        parts.append("<h2>Final metrics (best checkpoint)</h2>")
        for path in evals:
            payload = json.loads(path.read_text())
            scalars = [(k, v) for k, v in payload.get("metrics", {}).items()
                       if isinstance(v, int | float)]
            used = payload.get("targets") or {}
            scalars += [(f"{target} checkpoint", f"{source['checkpoint']} (epoch "
                         f"{source['epoch']})") for target, source in used.items()]
            parts.append(f"<h3>split {html.escape(str(payload.get('split')))}</h3>"
                         + _table(scalars))

    curves = root / "curves.png"
    if not curves.exists() and records:
        plot_curves(records, curves, row.metric)
    if curves.exists():
        data = base64.b64encode(curves.read_bytes()).decode("ascii")
        parts.append("<h2>Curves</h2>"
                     f'<img alt="training curves" src="data:image/png;base64,{data}">')

    run = None
    try:
        run = load_run(root, device=device)
    except Exception as error:  # noqa: BLE001 - a page without the store still shows the files
        parts.append(f"<p class=note>model or store not available ({html.escape(str(error))}): "
                     "no provenance details or prediction plot</p>")
    if run is not None:
        streams = dict(saved.get("streams", {}))
        randoms = random_streams(run.store, streams)
        if randoms:  # at the top: nothing below says anything about the encoders
            parts.insert(0, "<div class=banner>RANDOM WEIGHTS: stream"
                         f"{'s' if len(randoms) > 1 else ''} {html.escape(', '.join(randoms))} "
                         "came from encoders with random weights (a smoke run); these numbers "
                         "say nothing about the models.</div>")
        parts.append("<h2>Stream provenance</h2>" + _provenance(run.store, streams))
        val = saved["config"].get("val_split", "val")
        # the test split when it is labelled, else validation
        candidates = [split] if split else list(dict.fromkeys(["test", val]))
        plot, chosen, failure = None, candidates[0], ""
        for chosen in candidates:
            try:
                plot = head_plot(run, chosen)
                break
            except Exception as error:  # noqa: BLE001 - unlabelled split: try the next one
                failure = str(error)
        if plot is not None:
            title, image, caption = plot
            parts.append(f"<h2>{html.escape(title)} ({html.escape(chosen)}, "
                         f"{html.escape(run.checkpoint)} checkpoint)</h2>"
                         f'<img alt="{html.escape(title)}" src="data:image/png;base64,{image}">'
                         f"<p>{html.escape(caption)}</p>")
        else:
            parts.append(f"<p class=note>no prediction plot for split {html.escape(chosen)}: "
                         f"{html.escape(failure)}</p>")

    parts.append("<h2>Config (as it ran)</h2>" + _table(_config_rows(saved)))
    page = ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>affect run {html.escape(root.name)} ({html.escape(saved['head'])}): "
            f"{html.escape(result)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page)
    return out_path
