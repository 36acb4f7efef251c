"""Classification and regression metrics shared by every head (specs/metrics.md).

All numpy functions are vectorised and return plain Python floats (or numpy arrays for
per-column / per-class results), so they can go straight into a run's metrics JSON.
`ccc_loss` is the differentiable torch twin of `ccc` used as a training loss.

Conventions:
- CCC uses population moments (ddof 0). It is undefined when both series are the same
  constant (0 / 0); we return 0.0 there so model selection never sees NaN.
- UAR averages recall over the classes present in the ground truth only.
- Labels are integer class indices in [0, num_classes).
"""

from __future__ import annotations

import numpy as np
import torch


def _as_float(x: np.ndarray | list | float) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _ccc_from_columns(pred: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """CCC per column of [N, K] arrays, with per-element 0/1 weights [N, K].

    Masked elements contribute nothing (a NaN there is fine: it is replaced before any sum);
    a NaN or infinity in a counted element is an error, never a score.
    """
    count = weight.sum(axis=0)
    if np.any(count == 0):
        raise ValueError("CCC: a column has no unmasked frames")
    keep = weight > 0
    bad = keep & ~(np.isfinite(pred) & np.isfinite(target))
    if bad.any():
        frames = int(bad.any(axis=1).sum())
        counted = int(keep.any(axis=1).sum())
        raise ValueError(f"CCC: NaN or infinite values in {frames} of {counted} counted frames "
                         "(mask them out or fix the predictions)")
    pred = np.where(keep, pred, 0.0)
    target = np.where(keep, target, 0.0)
    mu_p = (pred * weight).sum(axis=0) / count
    mu_t = (target * weight).sum(axis=0) / count
    # Centre before multiplying: avoids the cancellation of E[xy] - E[x]E[y].
    dp = (pred - mu_p) * weight
    dt = (target - mu_t) * weight
    var_p = (dp * dp).sum(axis=0) / count
    var_t = (dt * dt).sum(axis=0) / count
    cov = (dp * dt).sum(axis=0) / count
    denom = var_p + var_t + (mu_p - mu_t) ** 2
    out = np.zeros_like(denom)
    ok = denom > 0
    out[ok] = 2.0 * cov[ok] / denom[ok]
    return out


def ccc(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Concordance correlation coefficient over all (unmasked) elements, flattened.

    `mask` (same shape as pred, truthy = keep) excludes frames, e.g. Aff-Wild2's -5 labels.
    """
    p = _as_float(pred).reshape(-1, 1)
    t = _as_float(target).reshape(-1, 1)
    if p.shape != t.shape:
        raise ValueError(f"CCC: pred has {p.size} values, target {t.size}")
    w = np.ones_like(p) if mask is None else np.asarray(mask, dtype=bool).reshape(-1, 1)
    if w.shape != p.shape:
        raise ValueError(f"CCC: mask has {w.size} values, pred {p.size}")
    return float(_ccc_from_columns(p, t, w.astype(np.float64))[0])


def ccc_per_column(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """CCC of each column of [N, K] arrays -> [K].

    `mask` is [N] (one flag per frame, all columns) or [N, K] (per element).
    """
    p = _as_float(pred)
    t = _as_float(target)
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"ccc_per_column wants two [N, K] arrays, got {p.shape} and {t.shape}")
    if mask is None:
        w = np.ones_like(p)
    else:
        m = np.asarray(mask, dtype=bool)
        if m.shape == p.shape[:1]:
            m = np.broadcast_to(m[:, None], p.shape)
        if m.shape != p.shape:
            raise ValueError(f"ccc_per_column: mask shape {m.shape} fits neither [N] nor [N, K]")
        w = m.astype(np.float64)
    return _ccc_from_columns(p, t, w)


def _labels(y: np.ndarray | list) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError("labels must be integer class indices")
    return arr.astype(np.int64)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C] counts; rows are the true class, columns the predicted class."""
    t, p = _labels(y_true), _labels(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels, y_pred {p.size}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes})")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _infer_classes(t: np.ndarray, p: np.ndarray, num_classes: int | None) -> int:
    if num_classes is not None:
        return num_classes
    return int(max(t.max(initial=-1), p.max(initial=-1)) + 1)


def uar(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> float:
    """Unweighted average recall: mean per-class recall over classes present in y_true."""
    t, p = _labels(y_true), _labels(y_pred)
    if t.size == 0:
        raise ValueError("UAR of an empty label set")
    cm = confusion_matrix(t, p, _infer_classes(t, p, num_classes))
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def uar_union(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """RAPT-CLIP's UAR (its trainer): mean of diag / (row sum + 1e-6) of the confusion matrix
    over the union of the true and predicted classes, so a predicted class absent from the truth
    counts as a recall of 0 (`uar` leaves it out)."""
    t, p = _labels(y_true), _labels(y_pred)
    if t.size == 0 or t.shape != p.shape:
        raise ValueError(f"UAR needs two equal-length non-empty label arrays ({t.size}, {p.size})")
    classes = np.union1d(t, p)
    cm = confusion_matrix(np.searchsorted(classes, t), np.searchsorted(classes, p), len(classes))
    return float(np.nanmean(np.diag(cm) / (cm.sum(axis=1) + 1e-6)))


def war(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Weighted average recall, i.e. plain accuracy."""
    t, p = _labels(y_true), _labels(y_pred)
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"WAR needs two equal-length non-empty label arrays ({t.size}, {p.size})")
    return float(np.mean(t == p))


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> float:
    """Sum over classes of (support_c / N) * F1_c; a class with no TP, FP, FN has F1 0."""
    t, p = _labels(y_true), _labels(y_pred)
    if t.size == 0:
        raise ValueError("weighted F1 of an empty label set")
    cm = confusion_matrix(t, p, _infer_classes(t, p, num_classes))
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    support = cm.sum(axis=1)
    return float(np.sum(f1 * support) / support.sum())


def ccc_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Differentiable 1 - CCC, averaged over channels.

    pred, target: [..., K], channels last (a 1-D input is one channel). Each channel's CCC is
    computed over all unmasked frames of the batch concatenated, as the ABAW recipes do.
    mask: pred.shape[:-1] (one flag per frame) or pred.shape (per element); truthy = keep.
    `eps` keeps the loss finite when a batch's targets and predictions are both constant.
    """
    if pred.shape != target.shape:
        raise ValueError(f"ccc_loss: pred {tuple(pred.shape)} != target {tuple(target.shape)}")
    if pred.dim() == 1:
        pred, target = pred[:, None], target[:, None]
        mask = None if mask is None else mask[:, None]
    k = pred.shape[-1]
    p = pred.reshape(-1, k)
    t = target.reshape(-1, k).to(p.dtype)
    if mask is None:
        w = torch.ones_like(p)
    else:
        m = mask
        if m.shape == pred.shape[:-1]:
            m = m.unsqueeze(-1).expand(pred.shape)
        if m.shape != pred.shape:
            raise ValueError(f"ccc_loss: mask {tuple(mask.shape)} fits neither frames nor values")
        w = m.reshape(-1, k).to(p.dtype)
        # masked values contribute nothing, also when they are NaN (0 * NaN would be NaN)
        p = torch.where(w > 0, p, torch.zeros_like(p))
        t = torch.where(w > 0, t, torch.zeros_like(t))
    count = w.sum(dim=0).clamp_min(1.0)
    mu_p = (p * w).sum(dim=0) / count
    mu_t = (t * w).sum(dim=0) / count
    dp = (p - mu_p) * w
    dt = (t - mu_t) * w
    var_p = (dp * dp).sum(dim=0) / count
    var_t = (dt * dt).sum(dim=0) / count
    cov = (dp * dt).sum(dim=0) / count
    value = 2.0 * cov / (var_p + var_t + (mu_p - mu_t) ** 2 + eps)
    return (1.0 - value).mean()
