"""A REACT participant scores generated facial reactions and compares them with naive baselines.

The compiled metrics are checked against plain re-statements of the challenge definitions
(loops over speakers, predictions, listeners and lags, np.corrcoef, torch.cdist), written
here independently of heads.react_metrics.
"""

import json
import math

import numpy as np
import pytest
import torch

from heads.react_metrics import (
    BASELINE_NAMES,
    METRIC_NAMES,
    dtw_groups,
    frd_distance,
    naive_baselines,
    react_metrics,
    tlcc_offset,
)

GROUPS = ((0, 15, 1 / 15), (15, 17, 1.0), (17, 25, 1 / 8))


# ---- plain reference implementations ------------------------------------------------------


def ref_dtw(x: np.ndarray, y: np.ndarray) -> float:
    """tslearn's dtw, cell by cell, in float64."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(n):
        for j in range(m):
            acc[i + 1, j + 1] = cost[i, j] + min(acc[i, j], acc[i, j + 1], acc[i + 1, j])
    return math.sqrt(acc[n, m])


def ref_dtw_rows(x: np.ndarray, y: np.ndarray) -> float:
    """Same DTW, a row at a time (min-plus scan), fast enough for long sequences."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    prev = np.r_[0.0, np.full(len(y), np.inf)]
    for i in range(len(x)):
        c = ((x[i] - y) ** 2).sum(-1)
        a = c + np.minimum(prev[:-1], prev[1:])  # from the diagonal or from above
        cs = np.cumsum(c)
        row = cs + np.minimum.accumulate(a - cs)  # or from the left, any number of steps
        prev = np.r_[np.inf, row]
    return math.sqrt(prev[-1])


def ref_ccc(t: np.ndarray, p: np.ndarray) -> float:
    vals = []
    for d in range(t.shape[1]):
        with np.errstate(all="ignore"):
            cor = np.nan_to_num(np.corrcoef(t[:, d], p[:, d])[0, 1])
        num = 2 * cor * t[:, d].std() * p[:, d].std()
        den = t[:, d].var() + p[:, d].var() + (t[:, d].mean() - p[:, d].mean()) ** 2
        vals.append(num / (den + 1e-8))
    return float(np.mean(vals))


def ref_tlcc(p: np.ndarray, s: np.ndarray, max_lag: int = 49) -> int:
    rs = []
    for lag in range(-max_lag, max_lag + 1):
        if lag > 0:
            a, b = p[lag:], s[:-lag]
        elif lag < 0:
            a, b = p[:lag], s[-lag:]
        else:
            a, b = p, s
        per_dim = []
        for d in range(p.shape[1]):
            with np.errstate(all="ignore"):
                per_dim.append(np.nan_to_num(np.corrcoef(a[:, d], b[:, d])[0, 1]))
        rs.append(np.mean(per_dim))
    return abs(max_lag - int(np.argmax(rs)))


def ref_metrics(pred, gt, spk, nb):
    pred64, gt64, spk64 = (a.astype(np.float64) for a in (pred, gt, spk))
    n, n_pred = pred.shape[:2]
    frc, frd, tlcc = [], [], []
    for k in range(n):
        js = np.flatnonzero(nb[k])
        frc.append(sum(max(ref_ccc(gt64[j], pred64[k, i]) for j in js) for i in range(n_pred)))
        frd.append(sum(
            min(sum(w * ref_dtw(pred[k, i, :, a:b], gt[j, :, a:b]) for a, b, w in GROUPS)
                for j in js)
            for i in range(n_pred)
        ))
        tlcc += [ref_tlcc(pred64[k, i], spk64[k]) for i in range(n_pred)]
    t = torch.tensor(pred64)
    flat = t.reshape(n, n_pred, -1)
    s_mse = np.mean([
        (torch.cdist(f, f) ** 2).sum().item() / (n_pred * (n_pred - 1) * flat.shape[-1])
        for f in flat
    ])
    slots = flat.transpose(0, 1)
    frdvs = (torch.cdist(slots, slots) ** 2).sum().item() / (n * (n - 1) * n_pred) / flat.shape[-1]
    return {
        "FRC": np.mean(frc), "FRD": np.mean(frd), "S_MSE": s_mse,
        "FRVar": torch.var(t, dim=2).mean().item(), "FRDvs": frdvs, "TLCC": np.mean(tlcc),
    }


# ---- data --------------------------------------------------------------------------------


def small_split(n=4, n_pred=3, n_t=56, seed=0, constant_channels=True):
    """Reactions with REACT's value kinds: binary AUs, VA in [-1, 1], expression probabilities."""
    rng = np.random.default_rng(seed)

    def reactions(*shape):
        x = np.empty((*shape, n_t, 25), dtype=np.float32)
        x[..., :15] = rng.random((*shape, n_t, 15)) < 0.3
        x[..., 15:17] = rng.uniform(-1, 1, (*shape, n_t, 2))
        x[..., 17:] = rng.dirichlet(np.ones(8), (*shape, n_t))
        return x

    gt, spk, pred = reactions(n), reactions(n), reactions(n, n_pred)
    if constant_channels:
        gt[0, :, 3] = 0.0  # an AU that never fires: a constant channel
        pred[1, 0, :, 5] = 0.0
    nb = rng.random((n, n)) < 0.4
    np.fill_diagonal(nb, True)
    return pred, gt, spk, nb


# ---- DTW ---------------------------------------------------------------------------------


def test_dtw_by_hand_on_a_three_frame_valence_curve():
    # Only valence (dim 15) moves: x = 0, 1, 2 against y = 0, 2.
    # Squared costs (rows x, cols y): [0 4; 1 1; 4 0]; cumulative: [0 4; 1 1; 5 1] -> sqrt(1)
    x = np.zeros((3, 25), np.float32)
    y = np.zeros((2, 25), np.float32)
    x[:, 15] = [0, 1, 2]
    y[:, 15] = [0, 2]
    np.testing.assert_allclose(dtw_groups(x, y), [0.0, 1.0, 0.0])
    assert frd_distance(dtw_groups(x, y)) == pytest.approx(1.0)


def test_dtw_kernel_matches_the_cell_by_cell_definition_across_lanes():
    # 19 jobs: one full batch of 16 SIMD lanes and a partial one; unequal lengths.
    rng = np.random.default_rng(1)
    x = rng.random((19, 7, 25), dtype=np.float32)
    y = rng.random((19, 5, 25), dtype=np.float32)
    got = dtw_groups(x, y)
    want = [[ref_dtw(x[i, :, a:b], y[i, :, a:b]) for a, b, _ in GROUPS] for i in range(19)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_dtw_in_float32_stays_within_1e5_of_float64_on_long_sequences():
    rng = np.random.default_rng(2)
    x = rng.random((2, 400, 25), dtype=np.float32)
    y = rng.random((2, 380, 25), dtype=np.float32)
    got = dtw_groups(x, y, workers=1)
    want = [[ref_dtw_rows(x[i, :, a:b], y[i, :, a:b]) for a, b, _ in GROUPS] for i in range(2)]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_dtw_of_a_sequence_with_itself_is_zero():
    x = np.random.default_rng(3).random((60, 25), dtype=np.float32)
    assert np.all(dtw_groups(x, x) == 0.0)


# ---- the six metrics -----------------------------------------------------------------------


def test_all_six_metrics_match_the_challenge_definitions():
    pred, gt, spk, nb = small_split()
    got = react_metrics(pred, gt, spk, nb)
    want = ref_metrics(pred, gt, spk, nb)
    assert set(got) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-9), name


def test_constant_channels_give_correlation_zero_not_nan():
    pred, gt, spk, nb = small_split()
    pred[:, :, :, :] = pred[:, :, :1, :]  # every prediction is one frame held still
    out = react_metrics(pred, gt, spk, nb)
    assert all(np.isfinite(v) for v in out.values())
    assert out["FRC"] == 0.0
    # every lag scores 0, the first (lag -49) wins: offset 49
    assert out["TLCC"] == 49.0


def test_one_prediction_per_speaker_has_no_diversity():
    pred, gt, spk, nb = small_split(n_pred=1)
    assert react_metrics(pred, gt, spk, nb)["S_MSE"] == 0.0


def test_s_mse_of_two_predictions_a_constant_apart_is_that_constant_squared():
    pred, gt, spk, nb = small_split(n_pred=2)
    pred[:, 1] = pred[:, 0] + 0.5
    # ordered pairs (0,1), (1,0): 2 * T * 25 * 0.25 / (2 * 1 * T * 25) = 0.25
    assert react_metrics(pred, gt, spk, nb)["S_MSE"] == pytest.approx(0.25, rel=1e-6)


@pytest.mark.parametrize("shift", [5, -12, 0])
def test_tlcc_of_a_shifted_copy_of_the_speaker_finds_the_shift(shift):
    rng = np.random.default_rng(4)
    speaker = rng.random((120, 25), dtype=np.float32)
    pred = np.roll(speaker, shift, axis=0)  # pred[t] = speaker[t - shift]
    pred[:, 7] = 1.0  # a constant channel does not hijack the peak
    assert tlcc_offset(pred, speaker) == abs(shift)
    assert ref_tlcc(pred.astype(np.float64), speaker.astype(np.float64)) == abs(shift)


def test_tlcc_averages_over_all_ten_predictions_not_only_the_first():
    # The official multiprocess code returns after prediction 0; here slot i lags by i frames.
    rng = np.random.default_rng(5)
    n, n_t = 2, 100
    spk = rng.random((n, n_t, 25), dtype=np.float32)
    pred = np.stack([np.roll(spk, i, axis=1) for i in range(10)], axis=1)
    gt = rng.random((n, n_t, 25), dtype=np.float32)
    out = react_metrics(pred, gt, spk, np.eye(n, dtype=bool))
    assert out["TLCC"] == pytest.approx(np.mean(range(10)))


def test_thread_count_does_not_change_results():
    pred, gt, spk, nb = small_split(seed=6)
    assert react_metrics(pred, gt, spk, nb, workers=1) == react_metrics(pred, gt, spk, nb)


def test_bad_shapes_and_empty_appropriateness_rows_are_refused():
    pred, gt, spk, nb = small_split()
    with pytest.raises(ValueError, match="pred"):
        react_metrics(pred[:, :, :50], gt, spk, nb)
    nb[2] = False
    with pytest.raises(ValueError, match="row 2"):
        react_metrics(pred, gt, spk, nb)


# ---- naive baselines -----------------------------------------------------------------------


def test_naive_baselines_behave_as_their_definitions_say():
    pred, gt, spk, nb = small_split(n=5, seed=7, constant_channels=False)
    base = naive_baselines(gt, spk, nb, n_pred=4, seed=0)
    assert list(base) == list(BASELINE_NAMES)
    assert all(set(v) == set(METRIC_NAMES) for v in base.values())

    truth = base["ground_truth"]
    assert truth["FRD"] == 0.0  # every prediction is itself an appropriate reaction
    assert truth["FRC"] == pytest.approx(4.0, rel=1e-5)  # CCC(x, x) = 1 - 1e-8 / (2 var)

    mime = base["mime"]
    assert mime["S_MSE"] == 0.0 and mime["TLCC"] == 0.0
    # identical predictions are evaluated once; the answer is the same as scoring them all
    assert mime == pytest.approx(react_metrics(np.repeat(spk[:, None], 4, 1), gt, spk, nb))

    seq = base["mean_sequence"]
    assert seq["S_MSE"] == 0.0 and seq["FRDvs"] == 0.0
    frame = base["mean_frame"]
    assert frame["FRVar"] == 0.0 and frame["FRDvs"] == 0.0 and frame["FRC"] == 0.0

    rand = base["random"]
    assert rand["S_MSE"] > 0 and rand["FRD"] > truth["FRD"]
    assert naive_baselines(gt, spk, nb, n_pred=4, seed=0)["random"] == rand


# ---- a prediction folder scored from the command line ---------------------------------------

PAIRS = [
    # csv uses the 2023 NoXI names; the Emotion folder below uses the 2024 ones (P1 / P2)
    ("NoXI/001_2016-03-17_Paris/Expert_video/1", "NoXI/001_2016-03-17_Paris/Novice_video/1"),
    ("RECOLA/group-1/P25/2", "RECOLA/group-1/P26/2"),
]


def write_react_root(root, rng, n_frames=752):
    """A REACT-layout split `test` with two dialogue rows (N = 4); returns emotions by path."""
    root.mkdir()
    (root / "test.csv").write_text(
        ",speaker_path,listener_path\n"
        + "".join(f"{r},{s},{li}\n" for r, (s, li) in enumerate(PAIRS))
    )
    emotions = {}
    for path in [p for pair in PAIRS for p in pair]:
        em = np.empty((n_frames, 25), dtype=np.float32)
        em[:, :15] = rng.random((n_frames, 15)) < 0.3
        em[:, 15:17] = rng.uniform(-1, 1, (n_frames, 2))
        em[:, 17:] = rng.dirichlet(np.ones(8), n_frames)
        em = np.round(em * 64) / 64  # multiples of 1/64 survive the csv round trip exactly
        emotions[path] = em
        stored = path.replace("Expert_video", "P1").replace("Novice_video", "P2")
        f = root / "test" / "Emotion" / f"{stored}.csv"
        f.parent.mkdir(parents=True, exist_ok=True)
        header = ",".join(f"c{i}" for i in range(25))
        np.savetxt(f, em, delimiter=",", header=header, comments="", fmt="%.6f")
    nb = np.eye(4, dtype=bool)
    nb[0, 2] = nb[2, 0] = True
    np.save(root / "neighbour_emotion_test.npy", nb.astype(np.int64))
    return emotions


def write_predictions(pred_dir, emotions):
    """Each speaker clip's 10 predictions are its real listener's reaction (first 750 frames)."""
    speakers = [s for s, _ in PAIRS] + [li for _, li in PAIRS]
    listeners = [li for _, li in PAIRS] + [s for s, _ in PAIRS]
    for s, li in zip(speakers, listeners):
        d = pred_dir / "test" / s
        d.mkdir(parents=True)
        for i in range(10):
            torch.save(torch.from_numpy(emotions[li][:750]), d / f"result-{i}.pth")
    return speakers


def test_react_command_scores_a_prediction_folder_as_json(tmp_path):
    from click.testing import CliRunner

    from pipelines.cli_metrics import metrics

    rng = np.random.default_rng(8)
    emotions = write_react_root(tmp_path / "react", rng)
    write_predictions(tmp_path / "pred", emotions)
    args = ["react", "--pred-dir", str(tmp_path / "pred"), "--data-root", str(tmp_path / "react"),
            "--split", "test"]

    result = CliRunner().invoke(metrics, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {*METRIC_NAMES, "baselines"}
    assert set(out["baselines"]) == set(BASELINE_NAMES)
    # predictions were found by the speaker's path and are the real listener's reaction
    assert out["FRD"] == 0.0
    assert out["FRC"] == pytest.approx(10.0, rel=1e-5)
    assert out["S_MSE"] == 0.0
    assert out["FRD"] < out["baselines"]["random"]["FRD"]

    table = CliRunner().invoke(metrics, args)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert "FRC" in lines[0] and "TLCC" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["model", *BASELINE_NAMES]


def test_missing_or_misshapen_prediction_files_are_named(tmp_path):
    from features_store.errors import UserError
    from pipelines.react_eval import evaluate_react_dir

    rng = np.random.default_rng(9)
    emotions = write_react_root(tmp_path / "react", rng)
    speakers = write_predictions(tmp_path / "pred", emotions)
    victim = tmp_path / "pred" / "test" / speakers[3] / "result-4.pth"

    torch.save(torch.zeros(700, 25), victim)
    with pytest.raises(UserError, match=r"result-4\.pth: shape \(700, 25\)"):
        evaluate_react_dir(tmp_path / "pred", tmp_path / "react", "test", baselines=False)

    victim.unlink()
    with pytest.raises(UserError, match=r"P26/2/result-4\.pth: prediction file not found"):
        evaluate_react_dir(tmp_path / "pred", tmp_path / "react", "test", baselines=False)
