"""Metrics against hand-computed cases and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from genclust.evaluation.metrics import (
    cluster_acc,
    clustering_report,
    contingency,
    hungarian_match,
    mean_class_acc,
    purity,
)


def test_acc_is_permutation_invariant():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_acc(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0


def test_acc_hand_case():
    # clusters: A={0,0,1}, B={1,2,2}: best map A->0 (2 right), B->2 (2 right) -> 4/6
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([5, 5, 5, 7, 7, 7])
    assert cluster_acc(y, pred) == pytest.approx(4 / 6)
    assert hungarian_match(y, pred) == {5: 0, 7: 2}


def test_acc_is_not_purity_when_clusters_merge():
    # one cluster for everything: purity = majority share, Hungarian ACC = one class only
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.zeros(6, dtype=int)
    assert cluster_acc(y, pred) == pytest.approx(3 / 6)
    assert purity(y, pred) == pytest.approx(3 / 6)
    # more clusters than classes: purity 1.0, Hungarian ACC counts one cluster per class
    pred = np.arange(6)
    assert purity(y, pred) == 1.0
    assert cluster_acc(y, pred) == pytest.approx(3 / 6)


def test_acc_with_fewer_clusters_than_classes_and_odd_labels():
    y = np.array([3, 3, 9, 9, -4, -4])
    pred = np.array([-1 + 11, 10, 20, 20, 20, 20])  # labels need not be contiguous
    assert cluster_acc(y, pred) == pytest.approx(4 / 6)


def test_noise_points_count_as_errors():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, -1, 1, 1])
    report = clustering_report(y, pred)
    assert report["acc"] == pytest.approx(3 / 4)
    assert report["acc_labeled"] == 1.0
    assert report["fraction_labeled"] == 0.75
    assert report["clusters_found"] == 2


def test_nmi_ari_match_sklearn():
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 5, 200), rng.integers(0, 7, 200)
    report = clustering_report(y, pred)
    assert report["nmi"] == pytest.approx(normalized_mutual_info_score(y, pred))
    assert report["ari"] == pytest.approx(adjusted_rand_score(y, pred))


def test_mean_class_acc_balances_classes():
    y = np.array([0] * 8 + [1] * 2)
    pred = np.array([0] * 8 + [0, 1])
    assert mean_class_acc(y, pred) == pytest.approx((1.0 + 0.5) / 2)


def test_contingency_shape_and_errors():
    assert contingency(np.array([0, 1, 1]), np.array([4, 4, 9])).tolist() == [[1, 1], [0, 1]]
    with pytest.raises(ValueError):
        cluster_acc(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError):
        cluster_acc(np.array([]), np.array([]))
