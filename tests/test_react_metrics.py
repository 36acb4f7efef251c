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
    ALL_METRIC_NAMES,
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


def ref_tlcc_official(p: np.ndarray, s: np.ndarray, max_lag: int = 49) -> int:
    """The challenge script's lag search: np.corrcoef per channel (NaN for a constant segment),
    the channel mean as a float32 torch tensor, torch.argmax (which ranks NaN highest)."""
    rs = []
    for lag in range(-max_lag, max_lag + 1):
        if lag > 0:
            a, b = p[lag:], s[:-lag]
        elif lag < 0:
            a, b = p[:lag], s[-lag:]
        else:
            a, b = p, s
        with np.errstate(all="ignore"):
            per_dim = [np.corrcoef(a[:, d], b[:, d])[0, 1].item() for d in range(p.shape[1])]
        rs.append(torch.mean(torch.Tensor(per_dim)))
    return abs(max_lag - int(torch.argmax(torch.Tensor(rs))))


def ref_tlcc(p: np.ndarray, s: np.ndarray, max_lag: int = 49) -> int:
    """Our corrected lag search: a constant segment has correlation 0."""
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


def ref_tlcc_fast(p: np.ndarray, s: np.ndarray, max_lag: int = 49) -> int:
    """ref_tlcc with the per-channel Pearson correlation written out over all channels at once."""
    rs = []
    for lag in range(-max_lag, max_lag + 1):
        a, b = (p[lag:], s[:len(s) - lag]) if lag >= 0 else (p[:lag], s[-lag:])
        da, db = a - a.mean(0), b - b.mean(0)
        den = np.sqrt((da ** 2).sum(0) * (db ** 2).sum(0))
        const = (a.max(0) == a.min(0)) | (b.max(0) == b.min(0))
        r = np.where(const, 0.0, (da * db).sum(0) / np.where(const, 1.0, den))
        rs.append(r.mean())
    return abs(max_lag - int(np.argmax(rs)))


def ref_metrics(pred, gt, spk, nb, dtw=ref_dtw, tlcc_fn=ref_tlcc):
    pred64, gt64, spk64 = (a.astype(np.float64) for a in (pred, gt, spk))
    n, n_pred = pred.shape[:2]
    frc, frd, tlcc, tlcc_first = [], [], [], []
    for k in range(n):
        js = np.flatnonzero(nb[k])
        frc.append(sum(max(ref_ccc(gt64[j], pred64[k, i]) for j in js) for i in range(n_pred)))
        frd.append(sum(
            min(sum(w * dtw(pred[k, i, :, a:b], gt[j, :, a:b]) for a, b, w in GROUPS)
                for j in js)
            for i in range(n_pred)
        ))
        tlcc += [tlcc_fn(pred64[k, i], spk64[k]) for i in range(n_pred)]
        # the official multiprocess path returns after the first prediction of each speaker
        tlcc_first.append(ref_tlcc_official(pred[k, 0], spk[k]))
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
        "FRVar": torch.var(t, dim=2).mean().item(), "FRDvs": frdvs,
        "TLCC": np.mean(tlcc_first), "TLCC_all": np.mean(tlcc),
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
    assert set(got) == set(ALL_METRIC_NAMES)
    for name in ALL_METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-9), name


def test_constant_channels_give_correlation_zero_not_nan():
    pred, gt, spk, nb = small_split()
    pred[:, :, :, :] = pred[:, :, :1, :]  # every prediction is one frame held still
    out = react_metrics(pred, gt, spk, nb)
    assert all(np.isfinite(v) for v in out.values())
    assert out["FRC"] == 0.0
    # corrected: every lag scores 0, the first (lag -49) wins: offset 49
    assert out["TLCC_all"] == 49.0
    # official: every lag is NaN, the first NaN (lag -49) wins: offset 49 as well
    assert out["TLCC"] == 49.0


def test_official_tlcc_lets_a_constant_channel_win_the_lag_search():
    # A user's predictions follow the speaker 3 frames late, but one AU never fires. The
    # official script's NaN at every lag wins torch.argmax: offset 49 instead of 3.
    rng = np.random.default_rng(11)
    speaker = rng.random((120, 25), dtype=np.float32)
    pred = np.roll(speaker, 3, axis=0)
    pred[:, 7] = 0.0
    assert tlcc_offset(pred, speaker, official=True) == 49 == ref_tlcc_official(pred, speaker)
    assert tlcc_offset(pred, speaker) == 3 == ref_tlcc(pred, speaker)
    # A channel constant only over the first 10 frames: only lags whose overlap lies inside
    # the constant stretch are NaN; the first of them wins.
    pred = np.roll(speaker, 3, axis=0)
    pred[:10, 7] = 0.5
    speaker_late = speaker.copy()
    assert tlcc_offset(pred, speaker_late, official=True) == ref_tlcc_official(pred, speaker_late)


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
    assert out["TLCC_all"] == pytest.approx(np.mean(range(10)))
    assert out["TLCC"] == 0.0  # the official score sees only slot 0


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
    assert all(set(v) == set(ALL_METRIC_NAMES) for v in base.values())

    truth = base["ground_truth"]
    assert truth["FRD"] == 0.0  # every prediction is itself an appropriate reaction
    assert truth["FRC"] == pytest.approx(4.0, rel=1e-5)  # CCC(x, x) = 1 - 1e-8 / (2 var)

    mime = base["mime"]
    assert mime["S_MSE"] == 0.0 and mime["TLCC_all"] == 0.0
    # officially, a binary AU constant in a short overlap (lag +-49 keeps 7 frames) is a NaN
    # lag, and the first NaN wins: the mime is scored out of sync
    assert mime["TLCC"] == 49.0
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

    from pipelines.cli.metrics import metrics

    rng = np.random.default_rng(8)
    emotions = write_react_root(tmp_path / "react", rng)
    write_predictions(tmp_path / "pred", emotions)
    args = ["react", "--pred-dir", str(tmp_path / "pred"), "--data-root", str(tmp_path / "react"),
            "--split", "test"]

    result = CliRunner().invoke(metrics, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {*ALL_METRIC_NAMES, "baselines"}
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
    # official metrics first, our corrected ones after the bar
    header = lines[0].split()
    assert header[:header.index("|")] == list(METRIC_NAMES)
    assert header[header.index("|") + 1:] == ["TLCC_all"]
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


# REACT 2024 layout: the split csv keeps the 2023 person names, the Emotion folders use P1 / P2
# for NoXI (Expert_video / Novice_video) and RECOLA (P25/P26, P41/P42, P45/P46).
DYADS_2024 = [
    ("NoXI/010_2016-03-25_Paris/Expert_video/3", "NoXI/010_2016-03-25_Paris/Novice_video/3"),
    ("RECOLA/group-1/P25/1", "RECOLA/group-1/P26/1"),
    ("RECOLA/group-2/P41/4", "RECOLA/group-2/P42/4"),
    ("RECOLA/group-3/P45/2", "RECOLA/group-3/P46/2"),
]
EMOTION_2024 = {"Expert_video": "P1", "Novice_video": "P2", "P25": "P1", "P26": "P2",
                "P41": "P1", "P42": "P2", "P45": "P1", "P46": "P2"}


def test_react_2024_layout_with_noxi_and_recola_scores_as_the_official_formulas(tmp_path):
    from click.testing import CliRunner

    from pipelines.cli.metrics import metrics

    rng = np.random.default_rng(12)
    n_frames = 60
    root, pred_dir = tmp_path / "react", tmp_path / "pred"
    root.mkdir()
    (root / "test.csv").write_text(",speaker_path,listener_path\n" + "".join(
        f"{r},{s},{li}\n" for r, (s, li) in enumerate(DYADS_2024)))
    people = [p for pair in DYADS_2024 for p in pair]

    def reactions(*shape):
        x = np.empty((*shape, n_frames, 25), dtype=np.float32)
        x[..., :15] = rng.random((*shape, n_frames, 15)) < 0.3
        x[..., 15:17] = rng.uniform(-1, 1, (*shape, n_frames, 2))
        x[..., 17:] = rng.dirichlet(np.ones(8), (*shape, n_frames))
        return np.round(x * 64) / 64  # exact through the csv

    emotion = dict(zip(people, reactions(len(people))))
    emotion[people[2]][:, 4] = 0.0  # RECOLA P25 never shows AU 6: a constant speaker channel
    for person, em in emotion.items():
        parts = person.split("/")
        parts[2] = EMOTION_2024[parts[2]]
        f = root / "test" / "Emotion" / ("/".join(parts) + ".csv")
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(f, em, delimiter=",", header=",".join(f"c{i}" for i in range(25)),
                   comments="", fmt="%.6f")
    speakers = [s for s, _ in DYADS_2024] + [li for _, li in DYADS_2024]
    listeners = [li for _, li in DYADS_2024] + [s for s, _ in DYADS_2024]
    n = len(speakers)
    nb = (rng.random((n, n)) < 0.3) | np.eye(n, dtype=bool)
    np.save(root / "neighbour_emotion_test.npy", nb.astype(np.int64))

    pred = reactions(n, 10).astype(np.float32)
    pred[3, 0, :, 2] = 1.0  # a prediction holding one AU on: constant in every lag
    pred[5, 0, :20, 9] = 0.0  # constant only in the lags whose overlap is early
    for k, s in enumerate(speakers):
        d = pred_dir / "test" / s
        d.mkdir(parents=True)
        for i in range(10):
            torch.save(torch.from_numpy(pred[k, i].copy()), d / f"result-{i}.pth")

    result = CliRunner().invoke(metrics, ["react", "--pred-dir", str(pred_dir), "--data-root",
                                          str(root), "--split", "test", "--frames",
                                          str(n_frames), "--no-baselines", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)

    gt = np.stack([emotion[p] for p in listeners])
    spk = np.stack([emotion[p] for p in speakers])
    want = ref_metrics(pred, gt, spk, nb, dtw=ref_dtw_rows, tlcc_fn=ref_tlcc_fast)
    for name in ALL_METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-9), name
    assert got["TLCC"] != got["TLCC_all"]  # the two definitions do differ on this data


def test_short_clips_name_the_frames_option_that_would_score_them(tmp_path):
    # Clips of 200 frames scored with the challenge's default 750: the one line says which
    # option sets the frames scored and the value that fits these clips.
    from click.testing import CliRunner

    from pipelines.cli.metrics import metrics

    rng = np.random.default_rng(10)
    emotions = write_react_root(tmp_path / "react", rng, n_frames=200)
    speakers = [s for s, _ in PAIRS] + [li for _, li in PAIRS]
    listeners = [li for _, li in PAIRS] + [s for s, _ in PAIRS]
    for s, li in zip(speakers, listeners):
        d = tmp_path / "pred" / "test" / s
        d.mkdir(parents=True)
        for i in range(10):
            torch.save(torch.from_numpy(emotions[li]), d / f"result-{i}.pth")
    result = CliRunner().invoke(metrics, ["react", "--pred-dir", str(tmp_path / "pred"),
                                          "--data-root", str(tmp_path / "react"),
                                          "--no-baselines"])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "200 frames, expected at least 750" in message
    assert "--frames 200" in message, message
