"""How long do the REACT metrics take on a challenge-sized split?

Times `heads.react_metrics.react_metrics` on random REACT-like data (binary AUs, valence and
arousal in [-1, 1], expression probabilities): N speakers x 10 predictions x 750 frames x 25,
about 10 appropriate listeners per speaker (plus the real one). N = 2000 is the size of a full
REACT split; N = 200 gives a quick read. FRD is the cost: N x 10 x |appropriate| DTWs of
750 x 750 cells.

It also times our numba DTW (16 jobs per SIMD batch, one thread) against a plain numpy
per-pair DTW (squared distances vectorised per row, the row's recurrence as a min-plus scan),
the fastest formulation we know without compiling, and checks they agree.

    .venv/bin/python bench/react_metrics.py              # N = 200 and N = 2000 (minutes)
    .venv/bin/python bench/react_metrics.py --sizes 200  # quick read
Prints markdown table lines. "CPU s" is the process's CPU time over all threads: on a shared
machine (load average above the core count) wall time overstates the cost, CPU time does not.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from heads.react_metrics import FRD_GROUPS, dtw_groups, react_metrics  # noqa: E402


def reactions(rng: np.random.Generator, shape: tuple[int, ...], n_t: int) -> np.ndarray:
    x = np.empty((*shape, n_t, 25), dtype=np.float32)
    x[..., :15] = rng.random((*shape, n_t, 15), dtype=np.float32) < 0.3
    x[..., 15:17] = rng.random((*shape, n_t, 2), dtype=np.float32) * 2 - 1
    e = rng.random((*shape, n_t, 8), dtype=np.float32)
    x[..., 17:] = e / e.sum(-1, keepdims=True)
    return x


def appropriateness(rng: np.random.Generator, n: int, per_row: int) -> np.ndarray:
    nb = np.zeros((n, n), dtype=bool)
    for k in range(n):
        nb[k, rng.choice(n, per_row, replace=False)] = True
    np.fill_diagonal(nb, True)
    return nb


def numpy_dtw(x: np.ndarray, y: np.ndarray) -> float:
    """tslearn's dtw in plain numpy, one row of the cumulative cost at a time."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    prev = np.r_[0.0, np.full(len(y), np.inf)]
    for i in range(len(x)):
        c = ((x[i] - y) ** 2).sum(-1)
        a = c + np.minimum(prev[:-1], prev[1:])
        cs = np.cumsum(c)
        prev = np.r_[np.inf, cs + np.minimum.accumulate(a - cs)]
    return math.sqrt(prev[-1])


def bench_dtw(n_t: int, threads: int) -> None:
    rng = np.random.default_rng(1)
    n_np, n_nb = 3, 32
    x = reactions(rng, (n_nb,), n_t)
    y = reactions(rng, (n_nb,), n_t)
    dtw_groups(x[:1, :8], y[:1, :8])  # compile outside the timing
    t0 = time.perf_counter()
    ref = np.array([[numpy_dtw(x[i, :, a:b], y[i, :, a:b]) for a, b, _ in FRD_GROUPS]
                    for i in range(n_np)])
    t_np = (time.perf_counter() - t0) / n_np
    t0 = time.perf_counter()
    got = dtw_groups(x, y, workers=1)
    t_1 = (time.perf_counter() - t0) / n_nb
    t0 = time.perf_counter()
    dtw_groups(x, y, workers=threads)
    t_all = (time.perf_counter() - t0) / n_nb
    err = float(np.max(np.abs(got[:n_np] - ref) / ref))
    print("\n| DTW per pair (3 groups, 750 x 750) | seconds | ratio vs numpy |")
    print("|---|---|---|")
    print(f"| plain numpy per pair, 1 thread | {t_np:.4f} | 1.0 |")
    print(f"| numba, 16 lanes, 1 thread | {t_1:.5f} | {t_np / t_1:.0f}x |")
    print(f"| numba, 16 lanes, {threads} threads | {t_all:.5f} | {t_np / t_all:.0f}x |")
    print(f"max relative difference numba (float32) vs numpy (float64): {err:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--preds", type=int, default=10)
    ap.add_argument("--frames", type=int, default=750)
    ap.add_argument("--appropriate", type=int, default=10)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-dtw", action="store_true", help="skip the numba vs numpy DTW timing")
    args = ap.parse_args()
    threads = args.workers or numba.get_num_threads()
    cpus = os.cpu_count()

    rng = np.random.default_rng(0)
    # compile the kernels once, outside the timings
    react_metrics(reactions(rng, (3, 2), 60), reactions(rng, (3,), 60),
                  reactions(rng, (3,), 60), np.eye(3, dtype=bool))

    print("| N | preds | frames | appropriate/row | DTWs | total s | CPU s | FRD s | FRC s "
          "| TLCC s | other s | nproc | numba threads | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        pred = reactions(rng, (n, args.preds), args.frames)
        gt = reactions(rng, (n,), args.frames)
        spk = reactions(rng, (n,), args.frames)
        nb = appropriateness(rng, n, args.appropriate)
        timings: dict[str, float] = {}
        t0, c0 = time.perf_counter(), time.process_time()
        out = react_metrics(pred, gt, spk, nb, workers=args.workers, timings=timings)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        other = total - timings["FRD"] - timings["FRC"] - timings["TLCC"]
        n_dtw = int(nb.sum()) * args.preds
        print(f"| {n} | {args.preds} | {args.frames} | {nb.sum() / n:.1f} | {n_dtw} "
              f"| {total:.1f} | {cpu:.1f} | {timings['FRD']:.1f} | {timings['FRC']:.1f} "
              f"| {timings['TLCC']:.1f} | {other:.1f} | {cpus} | {threads} "
              f"| {os.getloadavg()[0]:.1f} |", flush=True)
        print("  metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in out.items()), flush=True)
        del pred
    if not args.no_dtw:
        bench_dtw(args.frames, threads)


if __name__ == "__main__":
    main()
