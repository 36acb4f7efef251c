"""A researcher scores a head's outputs: CCC for valence/arousal, UAR/WAR/F1 for classes.

Every expected value below is worked out by hand in the comments.
"""

import numpy as np
import pytest
import torch

from heads.metrics import (
    ccc,
    ccc_loss,
    ccc_per_column,
    confusion_matrix,
    uar,
    war,
    weighted_f1,
)


def test_ccc_matches_a_hand_computed_value():
    # mu_p = 2, mu_t = 4, var_p = 2/3, var_t = 8/3, cov = 4/3
    # CCC = 2 * 4/3 / (2/3 + 8/3 + (2 - 4)^2) = (8/3) / (22/3) = 4/11
    assert ccc(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])) == pytest.approx(4 / 11)


def test_ccc_uses_population_moments_like_the_published_example():
    # Lin's example (as in the sklearn proposal): 0.97678916827853024 with ddof 0.
    value = ccc(np.array([2.5, 0.0, 2, 8]), np.array([3, -0.5, 2, 7]))
    assert value == pytest.approx(0.97678916827853024, rel=1e-12)


def test_masked_frames_are_left_out_of_ccc():
    pred = np.array([1.0, 2.0, 3.0, 100.0])
    target = np.array([2.0, 4.0, 6.0, -5.0])  # Aff-Wild2 marks invalid frames with -5
    mask = target != -5
    assert ccc(pred, target, mask) == pytest.approx(4 / 11)
    assert ccc(pred, target) != pytest.approx(4 / 11)


def test_nan_in_a_masked_out_frame_changes_nothing():
    # a frame the labeller left empty (NaN) and masked out, predicted as NaN too
    pred = np.array([1.0, 2.0, 3.0, np.nan])
    target = np.array([2.0, 4.0, 6.0, np.nan])
    mask = np.array([True, True, True, False])
    assert ccc(pred, target, mask) == pytest.approx(4 / 11)
    np.testing.assert_allclose(ccc_per_column(pred[:, None], target[:, None], mask), [4 / 11])
    loss = ccc_loss(torch.tensor(pred)[:, None], torch.tensor(target)[:, None],
                    torch.tensor(mask))
    assert loss.item() == pytest.approx(1 - 4 / 11)


def test_nan_in_a_counted_frame_is_an_error_not_a_score():
    pred = np.array([1.0, np.nan, 3.0, np.nan, 5.0])
    target = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    with pytest.raises(ValueError, match="2 of 5 counted frames"):
        ccc(pred, target)
    with pytest.raises(ValueError, match="1 of 4 counted frames"):
        ccc(pred, target, mask=np.array([True, True, True, False, True]))


def test_ccc_per_column_and_a_constant_column_gives_zero_not_nan():
    pred = np.array([[1.0, 0.5], [2.0, 0.5], [3.0, 0.5]])
    target = np.array([[2.0, 0.5], [4.0, 0.5], [6.0, 0.5]])
    out = ccc_per_column(pred, target)
    assert out.shape == (2,)
    assert out[0] == pytest.approx(4 / 11)
    assert out[1] == 0.0


def test_ccc_per_column_takes_a_frame_mask():
    pred = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [9.0, 9.0]])
    target = np.array([[2.0, 1.0], [4.0, 2.0], [6.0, 3.0], [0.0, 0.0]])
    out = ccc_per_column(pred, target, mask=np.array([True, True, True, False]))
    np.testing.assert_allclose(out, [4 / 11, 1.0])


def test_confusion_matrix_rows_are_the_true_class():
    cm = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])


def test_uar_leaves_out_classes_absent_from_the_ground_truth():
    y_true = [0, 0, 1, 1, 1]
    y_pred = [0, 1, 1, 1, 2]
    # recall(0) = 1/2, recall(1) = 2/3; class 2 never occurs in y_true, so it is left out:
    # (1/2 + 2/3) / 2 = 7/12, not (1/2 + 2/3 + 0) / 3
    assert uar(y_true, y_pred, num_classes=3) == pytest.approx(7 / 12)
    assert war(y_true, y_pred) == pytest.approx(3 / 5)


def test_weighted_f1_by_hand():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    # F1_0 = 2*2 / (2*2 + 0 + 1) = 0.8; F1_1 = 2 / (2 + 1 + 1) = 0.5; F1_2 = 2 / (2 + 1 + 0) = 2/3
    # weighted by support 3, 2, 1: (2.4 + 1.0 + 2/3) / 6 = 61/90
    assert weighted_f1(y_true, y_pred) == pytest.approx(61 / 90)
    assert weighted_f1(y_true, y_pred, num_classes=5) == pytest.approx(61 / 90)


def test_labels_out_of_range_are_refused():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], num_classes=3)


def test_ccc_loss_is_one_minus_ccc_differentiable_and_masked():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(2, 5, 2))
    pred = torch.tensor(target * 0.5 + rng.normal(size=(2, 5, 2)) * 0.3, requires_grad=True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    loss = ccc_loss(pred, torch.tensor(target), mask)

    keep = mask.numpy()
    p = pred.detach().numpy()[keep]
    expected = 1 - np.mean([ccc(p[:, c], target[keep][:, c]) for c in range(2)])
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    loss.backward()
    assert torch.isfinite(pred.grad).all()
    # masked frames get no gradient: changing them cannot change the loss
    assert torch.all(pred.grad[1, 3:] == 0)
    assert pred.grad[0].abs().sum() > 0


def test_ccc_loss_of_a_perfect_prediction_is_zero():
    x = torch.linspace(-1, 1, 20).reshape(20, 1)
    assert ccc_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
