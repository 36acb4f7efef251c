"""REACT facial-reaction metrics (FRC, FRD, S-MSE, FRVar, FRDvs, TLCC) and naive baselines.

Definitions follow specs/metrics.md, i.e. the REACT 2023/2024 challenge code, on
    pred [N, P, T, 25]  P predictions per speaker (P = 10 in the challenge, T = 750),
    gt   [N, T, 25]     listener reactions, gt[j] is the real listener of sample j,
    spk  [N, T, 25]     speaker behaviour,
    nb   [N, N] bool    nb[k, j]: listener reaction gt[j] is appropriate for speaker k.
Dims: 0:15 AU occurrence, 15:17 valence/arousal, 17:25 expression probabilities.

The six names (FRC, FRD, S_MSE, FRVar, FRDvs, TLCC) are the official script's numbers
(`regnn/evaluation.py` of the REACT 2024 baseline, which calls `compute_TLCC_mp`,
`compute_FRC_mp`, `compute_FRD_mp`, `compute_FRDvs`, `compute_FRVar`, `compute_s_mse`), including
its quirks, so they can stand next to published tables. Corrected variants are reported beside
them under their own names (CORRECTED_NAMES):
- TLCC (official): `compute_TLCC_mp` returns after the *first* prediction of each speaker, and a
  lag whose overlap has a constant channel (in prediction or speaker) scores NaN (np.corrcoef),
  which wins torch.argmax; the first NaN lag wins, so a channel constant over the whole clip
  (an AU that never fires) scores an offset of 49 frames whatever the other 24 channels do.
  Float32 inputs make "constant" exactly "all values equal" (their float64 mean is exact).
- TLCC_all (ours): all P predictions, as the single-process `compute_TLCC` does, and a constant
  channel has correlation 0 at that lag (it carries no timing information).
- FRC: the official CCC already turns a constant channel's NaN correlation into 0
  (`nan_to_num`), so ours is the official number.
- FRDvs with a single speaker is NaN, as the official 0/0.
- FRD: DTW is our numba kernel, not tslearn. It is the same definition (square root of the
  minimal cumulative squared Euclidean distance, steps (1,0), (0,1), (1,1), no window) on
  float32 inputs; tslearn accumulates in float64 and we in float32, which differs by about
  1e-7 relative (tested against a float64 reference to 1e-5).
- S-MSE and FRDvs use the identity sum_ij |x_i - x_j|^2 = 2 n sum_i |x_i - mean|^2 instead
  of `torch.cdist` (whose float32 matmul path, used past 25 rows, loses precision for close
  predictions): the same quantity, computed more exactly (within 1e-5 relative of the official).
- Identical predictions are evaluated once (e.g. the mime and mean baselines give the
  same prediction 10 times): only the cost changes, not the result.

Cost: FRD dominates (N x P x |appropriate| DTWs of T x T cells). Its kernel runs 16 DTW jobs
in the 16 lanes of one SIMD vector (the DTW recurrence is serial along a row, but
independent across jobs), with cells' squared distances computed in float32, and spreads
batches of 16 jobs over cores with numba `prange`. The other metrics are numba kernels too,
parallel over speakers (FRC, S-MSE), frames (FRDvs) or (prediction, speaker) jobs (TLCC, all
lags of one channel in one vectorised pass); every reduction over threads happens in numpy
afterwards, so results do not depend on the thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
from numba import njit, prange

N_DIMS = 25
# (start, stop, weight) of the three attribute groups FRD sums: AUs, valence/arousal, expressions.
FRD_GROUPS = ((0, 15, 1.0 / 15.0), (15, 17, 1.0), (17, 25, 1.0 / 8.0))
MAX_LAG = 49  # TLCC lags -49..49 frames: 2 s at 25 fps, as the challenge code
MIN_FRAMES = MAX_LAG + 2  # the shortest sequence TLCC can score (every lag needs an overlap)
LANES = 16  # DTW jobs per SIMD batch: 16 float32 = one AVX-512 register, two AVX2 ones
METRIC_NAMES = ("FRC", "FRD", "S_MSE", "FRVar", "FRDvs", "TLCC")  # the official script's
CORRECTED_NAMES = ("TLCC_all",)  # ours, reported beside the official ones (module docstring)
ALL_METRIC_NAMES = METRIC_NAMES + CORRECTED_NAMES
BASELINE_NAMES = ("ground_truth", "random", "mime", "mean_sequence", "mean_frame")


# --------------------------------------------------------------------------------------------
# DTW kernel
# --------------------------------------------------------------------------------------------


@njit(fastmath=True, nogil=True, cache=True)
def _dtw_batch(p_lane, q_lane, cost, prev, cur, out):
    """DTW of LANES jobs at once, for the three FRD groups.

    p_lane [T, 25 * LANES], q_lane [S, 25 * LANES]: frame t of job l, dim d at d * LANES + l.
    cost [S * 3 * LANES], prev/cur [(S + 1) * 3 * LANES]: rolling rows of the cumulative cost,
    laid out (s, group, lane) so that the serial recurrence along s is one vector op per group.
    out [3, LANES] receives sqrt of the final cumulative cost.
    """
    n_t = p_lane.shape[0]
    n_s = q_lane.shape[0]
    w = 3 * LANES
    inf = np.float32(np.inf)
    prev[:] = inf
    prev[0:w] = 0.0
    for t in range(n_t):
        p = p_lane[t]
        # Squared distances of frame t to every frame s, all lanes; the constant trip counts
        # below let LLVM unroll over dims and vectorise over lanes.
        for s in range(n_s):
            q = q_lane[s]
            cb = s * w
            for lane in range(LANES):
                acc = np.float32(0.0)
                for d in range(0, 15):
                    df = p[d * LANES + lane] - q[d * LANES + lane]
                    acc += df * df
                cost[cb + lane] = acc
                acc = np.float32(0.0)
                for d in range(15, 17):
                    df = p[d * LANES + lane] - q[d * LANES + lane]
                    acc += df * df
                cost[cb + LANES + lane] = acc
                acc = np.float32(0.0)
                for d in range(17, 25):
                    df = p[d * LANES + lane] - q[d * LANES + lane]
                    acc += df * df
                cost[cb + 2 * LANES + lane] = acc
        cur[0:w] = inf
        for s in range(n_s):
            b0 = s * w
            b1 = b0 + w
            for v in range(w):
                cur[b1 + v] = cost[b0 + v] + min(prev[b0 + v], prev[b1 + v], cur[b0 + v])
        prev, cur = cur, prev
    base = n_s * w
    for g in range(3):
        for lane in range(LANES):
            out[g, lane] = math.sqrt(prev[base + g * LANES + lane])


@njit(parallel=True, nogil=True, cache=True)
def _dtw_jobs(xs, ys, job_x, job_y):
    """Group DTWs of xs[job_x[i]] vs ys[job_y[i]] for every job i -> [J, 3] float64."""
    n_jobs = job_x.shape[0]
    n_t = xs.shape[1]
    n_s = ys.shape[1]
    n_batches = (n_jobs + LANES - 1) // LANES
    result = np.empty((n_jobs, 3), dtype=np.float64)
    for b in prange(n_batches):
        p_lane = np.empty((n_t, N_DIMS * LANES), dtype=np.float32)
        q_lane = np.empty((n_s, N_DIMS * LANES), dtype=np.float32)
        cost = np.empty(n_s * 3 * LANES, dtype=np.float32)
        prev = np.empty((n_s + 1) * 3 * LANES, dtype=np.float32)
        cur = np.empty((n_s + 1) * 3 * LANES, dtype=np.float32)
        out = np.empty((3, LANES), dtype=np.float64)
        first = b * LANES
        for lane in range(LANES):
            # Spare lanes of the last batch repeat its first job; their results are dropped.
            job = first + lane if first + lane < n_jobs else first
            x = xs[job_x[job]]
            y = ys[job_y[job]]
            for t in range(n_t):
                for d in range(N_DIMS):
                    p_lane[t, d * LANES + lane] = x[t, d]
            for s in range(n_s):
                for d in range(N_DIMS):
                    q_lane[s, d * LANES + lane] = y[s, d]
        _dtw_batch(p_lane, q_lane, cost, prev, cur, out)
        for lane in range(min(LANES, n_jobs - first)):
            for g in range(3):
                result[first + lane, g] = out[g, lane]
    return result


def dtw_groups(x: np.ndarray, y: np.ndarray, workers: int | None = None) -> np.ndarray:
    """DTW of x[i] vs y[i] on the three FRD groups (AU, VA, expression) -> [J, 3].

    x [J, T, 25], y [J, S, 25] (or single [T, 25] / [S, 25] sequences -> [3]). Each value is
    the tslearn `dtw`: sqrt of the minimal cumulative squared Euclidean frame distance.
    """
    single = np.ndim(x) == 2
    xs = _f32(x[None] if single else x)
    ys = _f32(y[None] if single else y)
    if xs.ndim != 3 or ys.ndim != 3 or xs.shape[2] != N_DIMS or ys.shape[2] != N_DIMS:
        raise ValueError(f"dtw_groups wants [J, T, {N_DIMS}] arrays, got {xs.shape}, {ys.shape}")
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(f"dtw_groups: {xs.shape[0]} x sequences but {ys.shape[0]} y sequences")
    jobs = np.arange(xs.shape[0], dtype=np.int64)
    with _threads(workers):
        res = _dtw_jobs(xs, ys, jobs, jobs)
    return res[0] if single else res


def frd_distance(groups: np.ndarray) -> np.ndarray:
    """Weighted FRD distance from group DTWs [..., 3]: dtw(AU)/15 + dtw(VA) + dtw(expr)/8."""
    weights = np.array([w for _, _, w in FRD_GROUPS])
    return groups @ weights


# --------------------------------------------------------------------------------------------
# TLCC kernel
# --------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _centre(z):
    """Channel-centred copy of z [T, D] as [D, T] float64, prefix sums of it and its square,
    and whether each prefix z[:n] (pre[d, n]) and suffix z[a:] (suf[d, a]) is constant."""
    n_t, n_d = z.shape
    c = np.empty((n_d, n_t), dtype=np.float64)
    s1 = np.zeros((n_d, n_t + 1), dtype=np.float64)
    s2 = np.zeros((n_d, n_t + 1), dtype=np.float64)
    pre = np.zeros((n_d, n_t + 1), dtype=np.bool_)
    suf = np.zeros((n_d, n_t + 1), dtype=np.bool_)
    for d in range(n_d):
        mean = 0.0
        for t in range(n_t):
            mean += z[t, d]
        mean /= n_t
        lo = hi = z[0, d]
        for t in range(n_t):
            v = z[t, d]
            lo, hi = min(lo, v), max(hi, v)
            pre[d, t + 1] = lo == hi
            c[d, t] = v - mean
            s1[d, t + 1] = s1[d, t] + (v - mean)
            s2[d, t + 1] = s2[d, t] + (v - mean) * (v - mean)
        lo = hi = z[n_t - 1, d]
        for t in range(n_t - 1, -1, -1):
            v = z[t, d]
            lo, hi = min(lo, v), max(hi, v)
            suf[d, t] = lo == hi
    return c, s1, s2, pre, suf


@njit(fastmath=True, nogil=True, cache=True)
def _lagged_products(a, b, max_lag, out):
    """out[L] = sum_t a[t + L] * b[t] for L in 0..max_lag; vectorised over L."""
    n = a.shape[0]
    out[:] = 0.0
    for t in range(n):
        bt = b[t]
        for lag in range(min(max_lag, n - 1 - t) + 1):
            out[lag] += a[t + lag] * bt


@njit(parallel=True, nogil=True, cache=True)
def _tlcc_jobs(xs, ys, job_x, job_y, max_lag, official):
    """|best lag| of the lagged cross-correlation of xs[job_x[i]] (pred) vs ys[job_y[i]] (speaker).

    Lag L pairs x[L:] with y[:T-L] (L >= 0) or x[:T+L] with y[-L:] (L < 0); each lag's score is
    the mean over channels of the Pearson correlation of the overlapping segments. A constant
    segment scores 0, or with `official` makes the lag NaN (np.corrcoef) and the first NaN lag
    wins (torch.argmax ranks NaN highest); `official` also rounds each correlation and the lag's
    mean to float32, as the official code's torch.Tensor does. The first maximum wins.
    """
    n_jobs = job_x.shape[0]
    n_t = xs.shape[1]
    n_d = xs.shape[2]
    n_lags = 2 * max_lag + 1
    result = np.empty(n_jobs, dtype=np.int64)
    for i in prange(n_jobs):
        xc, x1, x2, xpre, xsuf = _centre(xs[job_x[i]])
        yc, y1, y2, ypre, ysuf = _centre(ys[job_y[i]])
        pos = np.empty(max_lag + 1, dtype=np.float64)
        neg = np.empty(max_lag + 1, dtype=np.float64)
        rs = np.zeros(n_lags, dtype=np.float64)
        nan_lag = np.zeros(n_lags, dtype=np.bool_)
        for d in range(n_d):
            _lagged_products(xc[d], yc[d], max_lag, pos)  # x[t + L] * y[t]
            _lagged_products(yc[d], xc[d], max_lag, neg)  # x[t] * y[t + L]
            for li in range(n_lags):
                lag = li - max_lag
                if lag >= 0:
                    xa, ya, n, sxy = lag, 0, n_t - lag, pos[lag]
                else:
                    xa, ya, n, sxy = 0, -lag, n_t + lag, neg[-lag]
                x_const = xpre[d, n] if xa == 0 else xsuf[d, xa]
                y_const = ypre[d, n] if ya == 0 else ysuf[d, ya]
                if x_const or y_const:
                    nan_lag[li] = True
                    continue
                sx = x1[d, xa + n] - x1[d, xa]
                sy = y1[d, ya + n] - y1[d, ya]
                vx = x2[d, xa + n] - x2[d, xa] - sx * sx / n
                vy = y2[d, ya + n] - y2[d, ya] - sy * sy / n
                if vx > 0.0 and vy > 0.0:
                    r = (sxy - sx * sy / n) / math.sqrt(vx * vy)
                    r = min(1.0, max(-1.0, r))
                    rs[li] += np.float64(np.float32(r)) if official else r
        best = -1
        if official:
            for li in range(n_lags):
                rs[li] = np.float64(np.float32(rs[li] / n_d))
                if nan_lag[li] and best < 0:
                    best = li
        if best < 0:
            best = 0
            for li in range(1, n_lags):
                if rs[li] > rs[best]:
                    best = li
        result[i] = abs(max_lag - best)
    return result


def tlcc_offset(pred: np.ndarray, spk: np.ndarray, max_lag: int = MAX_LAG,
                official: bool = False) -> int:
    """TLCC offset (|lag| of the peak cross-correlation) of one prediction [T, D] vs its speaker.

    official: score as the REACT script (a constant channel's NaN lag wins); else constant
    channels count as correlation 0.
    """
    x, y = _f32(pred)[None], _f32(spk)[None]
    if x.shape != y.shape or x.shape[1] < max_lag + 2:
        raise ValueError(f"tlcc_offset wants two equal [T > {max_lag + 1}, D] arrays")
    zero = np.zeros(1, dtype=np.int64)
    return int(_tlcc_jobs(x, y, zero, zero, max_lag, official)[0])


# --------------------------------------------------------------------------------------------
# Metrics on indexed predictions
# --------------------------------------------------------------------------------------------


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


@contextmanager
def _threads(workers: int | None) -> Iterator[None]:
    """Run numba kernels on `workers` threads (default: all numba was started with)."""
    if workers is None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(workers), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _unique_predictions(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pred [N, P, T, D] -> (uniq [U, T, D], idx [N, P]) with pred[k, i] == uniq[idx[k, i]].

    Only the cheap, common repeats are found: the same prediction P times per speaker, and
    the same prediction for every speaker (the mime and mean baselines).
    """
    n, n_pred = pred.shape[:2]
    same_slots = all(
        np.array_equal(pred[0, i], pred[0, 0]) for i in range(1, n_pred)
    ) and all(np.array_equal(pred[:, i], pred[:, 0]) for i in range(1, n_pred))
    if not same_slots:
        return pred.reshape(n * n_pred, *pred.shape[2:]), np.arange(n * n_pred).reshape(n, n_pred)
    first = pred[:, 0]
    if n > 1 and np.array_equal(first, np.broadcast_to(first[:1], first.shape)):
        return first[:1], np.zeros((n, n_pred), dtype=np.int64)
    return first, np.repeat(np.arange(n)[:, None], n_pred, axis=1)


def _check_inputs(gt: np.ndarray, spk: np.ndarray, nb: np.ndarray) -> None:
    if gt.ndim != 3 or gt.shape[2] != N_DIMS:
        raise ValueError(f"gt must be [N, T, {N_DIMS}], got {gt.shape}")
    if spk.shape != gt.shape:
        raise ValueError(f"spk must have gt's shape {gt.shape}, got {spk.shape}")
    n, n_t = gt.shape[:2]
    if nb.shape != (n, n):
        raise ValueError(f"nb must be [{n}, {n}], got {nb.shape}")
    if n_t < MIN_FRAMES:
        raise ValueError(f"sequences must be longer than {MAX_LAG + 1} frames for TLCC, got {n_t}")
    empty = np.flatnonzero(~nb.any(axis=1))
    if empty.size:
        raise ValueError(f"nb row {int(empty[0])} has no appropriate listener")
    for name, arr in (("gt", gt), ("spk", spk)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values")


@njit(parallel=True, nogil=True, cache=True)
def _moments(xs):
    """Per row and channel of xs [R, T, D]: mean, population variance, constant (max == min)."""
    n_r, n_t, n_d = xs.shape
    mean = np.zeros((n_r, n_d), dtype=np.float64)
    var = np.zeros((n_r, n_d), dtype=np.float64)
    const = np.zeros((n_r, n_d), dtype=np.bool_)
    for r in prange(n_r):
        x = xs[r]
        for t in range(n_t):
            for d in range(n_d):
                mean[r, d] += x[t, d]
        for d in range(n_d):
            mean[r, d] /= n_t
            const[r, d] = True
        for t in range(n_t):
            for d in range(n_d):
                dev = x[t, d] - mean[r, d]
                var[r, d] += dev * dev
                if x[t, d] != x[0, d]:
                    const[r, d] = False
        for d in range(n_d):
            var[r, d] /= n_t
    return mean, var, const


@njit(parallel=True, nogil=True, cache=True)
def _frc_kernel(uniq, idx, gt, nb_ptr, nb_idx):
    """Per speaker k: sum over predictions of the max over appropriate j of CCC(gt[j], pred)."""
    n, n_pred = idx.shape
    n_t, n_d = gt.shape[1], gt.shape[2]
    mu_u, var_u, const_u = _moments(uniq)
    mu_g, var_g, const_g = _moments(gt)
    per_k = np.empty(n, dtype=np.float64)
    for k in prange(n):
        best = np.full(n_pred, -np.inf)
        acc = np.empty(n_d, dtype=np.float64)
        total = 0.0
        for i in range(n_pred):
            u = idx[k, i]
            for i0 in range(i):  # a repeated prediction scores as before
                if idx[k, i0] == u:
                    best[i] = best[i0]
                    break
            if best[i] == -np.inf:
                p = uniq[u]
                for jj in range(nb_ptr[k], nb_ptr[k + 1]):
                    j = nb_idx[jj]
                    g = gt[j]
                    acc[:] = 0.0
                    for t in range(n_t):
                        for d in range(n_d):
                            acc[d] += np.float64(p[t, d]) * g[t, d]
                    ccc = 0.0
                    for d in range(n_d):
                        if const_u[u, d] or const_g[j, d]:
                            continue  # correlation 0 (np.corrcoef: NaN, nan_to_num'd)
                        cov = acc[d] / n_t - mu_u[u, d] * mu_g[j, d]
                        diff = mu_u[u, d] - mu_g[j, d]
                        ccc += 2.0 * cov / (var_u[u, d] + var_g[j, d] + diff * diff + 1e-8)
                    best[i] = max(best[i], ccc / n_d)
            total += best[i]
        per_k[k] = total
    return per_k  # reduced by the caller: a reduction here would depend on the thread count


def _frc(uniq: np.ndarray, idx: np.ndarray, gt: np.ndarray, nb: np.ndarray) -> float:
    nb_ptr = np.r_[0, np.cumsum(nb.sum(axis=1))].astype(np.int64)
    nb_idx = np.nonzero(nb)[1].astype(np.int64)
    return float(_frc_kernel(uniq, idx.astype(np.int64), gt, nb_ptr, nb_idx).mean())


def _frd(uniq, idx, gt, nb) -> float:
    n, n_pred = idx.shape
    kk, jj = np.nonzero(nb)  # row-major: grouped by k
    codes = idx[kk].astype(np.int64) * n + jj[:, None]  # [pairs, P]
    uniq_codes, inv = np.unique(codes, return_inverse=True)
    groups = _dtw_jobs(uniq, gt, uniq_codes // n, uniq_codes % n)
    dist = frd_distance(groups)[inv.reshape(codes.shape)]  # [pairs, P]
    starts = np.flatnonzero(np.r_[True, kk[1:] != kk[:-1]])
    best = np.minimum.reduceat(dist, starts, axis=0)  # [N, P]
    return float(best.sum(axis=1).mean())


def _tlcc(uniq, idx, spk, official: bool) -> float:
    """official: first prediction of each speaker only, NaN lags win (compute_TLCC_mp);
    else all predictions, constant channels correlation 0 (TLCC_all)."""
    n = idx.shape[0]
    slots = idx[:, :1] if official else idx
    codes = slots.astype(np.int64) * n + np.arange(n)[:, None]
    uniq_codes, inv = np.unique(codes, return_inverse=True)
    offsets = _tlcc_jobs(uniq, spk, uniq_codes // n, uniq_codes % n, MAX_LAG, official)
    return float(offsets[inv].mean())


@njit(parallel=True, nogil=True, cache=True)
def _spread_within_speakers(uniq, idx):
    """Per speaker k: sum over (t, d) of sum_i (x_i - mean_i x)^2 over its P predictions."""
    n, n_pred = idx.shape
    n_t, n_d = uniq.shape[1], uniq.shape[2]
    out = np.empty(n, dtype=np.float64)
    for k in prange(n):
        mean = np.empty(n_d, dtype=np.float64)
        total = 0.0
        for t in range(n_t):
            mean[:] = 0.0
            for i in range(n_pred):
                x = uniq[idx[k, i], t]
                for d in range(n_d):
                    mean[d] += x[d]
            mean /= n_pred
            for i in range(n_pred):
                x = uniq[idx[k, i], t]
                for d in range(n_d):
                    dev = x[d] - mean[d]
                    total += dev * dev
        out[k] = total
    return out


@njit(parallel=True, nogil=True, cache=True)
def _spread_across_speakers(uniq, column):
    """Per frame t: sum over d of sum_k (x_k - mean_k x)^2 for the predictions uniq[column[k]]."""
    n = column.shape[0]
    n_t, n_d = uniq.shape[1], uniq.shape[2]
    per_t = np.empty(n_t, dtype=np.float64)
    for t in prange(n_t):
        mean = np.zeros(n_d, dtype=np.float64)
        for k in range(n):
            x = uniq[column[k], t]
            for d in range(n_d):
                mean[d] += x[d]
        mean /= n
        total = 0.0
        for k in range(n):
            x = uniq[column[k], t]
            for d in range(n_d):
                dev = x[d] - mean[d]
                total += dev * dev
        per_t[t] = total
    return per_t  # reduced by the caller: a reduction here would depend on the thread count


def _s_mse(uniq, idx) -> float:
    n, n_pred = idx.shape
    if n_pred < 2:
        return 0.0
    frame = uniq.shape[1] * uniq.shape[2]
    # sum_ij |x_i - x_j|^2 = 2 P sum_i |x_i - mean|^2, divided by P (P - 1) T D
    spread = _spread_within_speakers(uniq, idx.astype(np.int64))
    return float(np.mean(2.0 * spread / ((n_pred - 1) * frame)))


def _frvar(uniq, idx) -> float:
    counts = np.bincount(idx.ravel(), minlength=uniq.shape[0])
    used = np.flatnonzero(counts)
    n_t = uniq.shape[1]
    rows = uniq if used.size == uniq.shape[0] else uniq[used]
    var = _moments(rows)[1] * (n_t / (n_t - 1))  # unbiased, as torch.var
    return float((var.mean(axis=1) * counts[used]).sum() / idx.size)


def _frdvs(uniq, idx) -> float:
    n, n_pred = idx.shape
    if n < 2:
        return math.nan  # the official 0 / 0
    frame = uniq.shape[1] * uniq.shape[2]
    cols = idx.astype(np.int64)
    total = sum(_spread_across_speakers(uniq, np.ascontiguousarray(cols[:, i])).sum()
                for i in range(n_pred))
    # sum over slots and ordered speaker pairs of squared distances = 2 N sum_k |x_k - mean|^2
    return 2.0 * n * total / (n * (n - 1) * n_pred) / frame


def _metrics_indexed(uniq, idx, gt, spk, nb, workers, timings=None) -> dict[str, float]:
    steps = {
        "FRC": lambda: _frc(uniq, idx, gt, nb),
        "FRD": lambda: _frd(uniq, idx, gt, nb),
        "S_MSE": lambda: _s_mse(uniq, idx),
        "FRVar": lambda: _frvar(uniq, idx),
        "FRDvs": lambda: _frdvs(uniq, idx),
        "TLCC": lambda: _tlcc(uniq, idx, spk, official=True),
        "TLCC_all": lambda: _tlcc(uniq, idx, spk, official=False),
    }
    out = {}
    with _threads(workers):
        for name, step in steps.items():
            start = time.perf_counter()
            out[name] = step()
            if timings is not None:
                timings[name] = time.perf_counter() - start
    return out


def react_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spk: np.ndarray,
    nb: np.ndarray,
    workers: int | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, float]:
    """The six official REACT metrics of predictions pred [N, P, T, 25] and our corrected
    variants (ALL_METRIC_NAMES; see the module docstring).

    FRC (up to P, higher is better), FRD (lower is better), S_MSE / FRVar / FRDvs (diversity,
    higher is more diverse), TLCC / TLCC_all (synchrony offset in frames, lower is better).
    workers: CPU threads for the compiled kernels (default: all).
    timings: if given, receives the seconds each metric took.
    """
    pred, gt, spk = _f32(pred), _f32(gt), _f32(spk)
    nb = np.asarray(nb).astype(bool)
    _check_inputs(gt, spk, nb)
    if pred.ndim != 4 or pred.shape[0] != gt.shape[0] or pred.shape[2:] != gt.shape[1:]:
        raise ValueError(f"pred must be [N, P, T, D] with gt's [N, T, D] = {gt.shape}")
    if not np.isfinite(pred).all():
        raise ValueError("pred contains NaN or infinite values")
    uniq, idx = _unique_predictions(pred)
    return _metrics_indexed(_f32(uniq), idx, gt, spk, nb, workers, timings)


def naive_baselines(
    gt: np.ndarray,
    spk: np.ndarray,
    nb: np.ndarray,
    n_pred: int = 10,
    seed: int = 0,
    workers: int | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of the naive predictors every model is reported next to.

    - ground_truth: speaker k's P predictions are appropriate real reactions gt[j], nb[k, j],
      drawn without replacement (all of them, then with replacement, when fewer than P).
    - random: independent uniform values in [min, max] of each dim over all of gt.
    - mime: the speaker's own behaviour spk[k], P times.
    - mean_sequence: the mean listener sequence over all N samples, for every speaker.
    - mean_frame: the mean listener frame over all samples and frames, held for T frames.
    """
    gt, spk = _f32(gt), _f32(spk)
    nb = np.asarray(nb).astype(bool)
    _check_inputs(gt, spk, nb)
    n, n_t, n_d = gt.shape
    rng = np.random.default_rng(seed)

    gt_idx = np.empty((n, n_pred), dtype=np.int64)
    for k in range(n):
        js = np.flatnonzero(nb[k])
        take = rng.permutation(js)[:n_pred]
        if take.size < n_pred:
            take = np.concatenate([take, rng.choice(js, n_pred - take.size, replace=True)])
        gt_idx[k] = take

    lo, hi = gt.min(axis=(0, 1)), gt.max(axis=(0, 1))
    random = rng.random((n * n_pred, n_t, n_d), dtype=np.float32)
    random *= hi - lo  # in place: at REACT size this array alone is 1.5 GB
    random += lo

    same = np.zeros((n, n_pred), dtype=np.int64)
    per_speaker = np.repeat(np.arange(n)[:, None], n_pred, axis=1)
    mean_seq = gt.mean(axis=0, dtype=np.float64)[None]
    mean_frame = np.broadcast_to(gt.mean(axis=(0, 1), dtype=np.float64), (1, n_t, n_d))
    cases = {
        "ground_truth": (gt, gt_idx),
        "random": (random, np.arange(n * n_pred).reshape(n, n_pred)),
        "mime": (spk, per_speaker),
        "mean_sequence": (mean_seq, same),
        "mean_frame": (mean_frame, same),
    }
    return {
        name: _metrics_indexed(_f32(uniq), idx, gt, spk, nb, workers)
        for name, (uniq, idx) in cases.items()
    }
