"""Metrics against hand-computed confusion matrices, including degenerate cases."""

import math

import numpy as np
import pytest

from landslide_dask.train.metrics import Confusion, average_precision, best_level, fmt


def test_hand_computed_matrix():
    c = Confusion(tp=20, fp=5, fn=10, tn=65)
    assert c.precision() == pytest.approx(0.8)
    assert c.recall() == pytest.approx(20 / 30)
    assert c.f1() == pytest.approx(40 / 55)
    assert c.iou() == pytest.approx(20 / 35)
    assert c.mcc() == pytest.approx((20 * 65 - 5 * 10) / math.sqrt(25 * 30 * 70 * 75))


def test_from_arrays_ignores_unknown_and_masked_pixels():
    truth = np.array([[1, 1, 0, 0], [255, 255, 1, 0]], np.uint8)
    pred = np.array([[1, 0, 1, 0], [1, 1, 1, 1]], np.uint8)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    assert Confusion.from_arrays(pred, truth, mask) == Confusion(tp=2, fp=1, fn=1, tn=1)


def test_confusions_add_up_like_the_union():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 2, 1000), rng.integers(0, 2, 1000)
    whole = Confusion.from_arrays(p, t)
    parts = Confusion.from_arrays(p[:300], t[:300]) + Confusion.from_arrays(p[300:], t[300:])
    assert whole == parts and whole.total == 1000


NAN = float("nan")


@pytest.mark.parametrize(
    "c, mcc, precision, recall",
    [
        (Confusion(tn=100), NAN, NAN, NAN),  # nothing there, nothing predicted: undefined, never 1
        (Confusion(fn=10, tn=90), 0.0, 0.0, 0.0),  # predicts nothing while landslides exist
        (Confusion(fp=10, tn=90), NAN, 0.0, NAN),  # false alarms where there is nothing to find
        (Confusion(tp=100), NAN, 1.0, 1.0),  # landslides everywhere: MCC has no negatives
        (Confusion(tp=10, fp=90), 0.0, 0.1, 1.0),  # predicts everything
        (Confusion(tp=5, fn=5, fp=5, tn=5), 0.0, 0.5, 0.5),
        (Confusion(fp=5, fn=5), -1.0, 0.0, 0.0),  # every pixel wrong
    ],
)
def test_degenerate_cases(c, mcc, precision, recall):
    assert c.mcc() == pytest.approx(mcc, nan_ok=True)
    assert c.precision() == pytest.approx(precision, nan_ok=True)
    assert c.recall() == pytest.approx(recall, nan_ok=True)


def test_an_empty_class_is_reported_undefined_not_perfect():
    """The lie this guards against: a split without landslides scored MCC 1.0 for a map of nothing."""
    empty = Confusion(tn=5000)
    assert math.isnan(empty.mcc()) and math.isnan(empty.f1()) and math.isnan(empty.iou())
    s = empty.scores()
    assert s["mcc"] is None and s["recall"] is None and s["f1"] is None and s["tn"] == 5000
    assert fmt(empty.mcc()) == "undefined" and fmt(0.51234) == "0.512"
    assert Confusion(tp=3, fn=1, fp=1, tn=5).scores()["mcc"] == pytest.approx((15 - 1) / 24)


def _levels(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.bincount(scores[truth], minlength=256), np.bincount(scores[~truth], minlength=256)


def test_best_level_is_the_best_of_every_threshold_and_average_precision_the_area_by_hand():
    rng = np.random.default_rng(0)
    truth = rng.random(5000) < 0.2
    scores = np.clip(rng.normal(np.where(truth, 150, 90), 40), 0, 255).astype(np.int64)
    mcc, level = best_level(*_levels(scores, truth))
    every = [Confusion.from_arrays(scores >= k, truth.astype(np.uint8)).mcc() for k in range(256)]
    assert mcc == pytest.approx(max(every)) and every[level] == pytest.approx(mcc)
    assert 90 < level < 150 and 0 < mcc < 1
    # average precision: the mean of the precision at each landslide pixel's own level (ties together)
    order = sorted(set(scores[truth]), reverse=True)
    by_hand = sum(
        (scores[truth] == k).sum() / truth.sum() * (truth & (scores >= k)).sum() / (scores >= k).sum() for k in order
    )
    assert average_precision(*_levels(scores, truth)) == pytest.approx(by_hand)


def test_best_level_of_a_map_that_separates_the_classes_and_of_one_class():
    truth = np.r_[np.ones(50, bool), np.zeros(200, bool)]
    scores = np.r_[np.full(50, 200), np.arange(200) % 101]
    mcc, level = best_level(*_levels(scores, truth))
    assert mcc == 1.0 and 100 < level <= 200
    mcc, level = best_level(*_levels(scores[:50], truth[:50]))  # no negative pixel: undefined
    assert math.isnan(mcc) and level == -1
