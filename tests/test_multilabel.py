import itertools

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from animeml.core.multilabel import (best_constant_set, bootstrap_interval, evaluate, label_prior, most_frequent_labels,
                                     multi_hot, plot_pr_curves, resampled_f1, top_k_accuracy, tune_global_threshold,
                                     tune_thresholds)

LABELS = ["a", "b", "c", "d"]


def planted(seed=0, rows=400):
    """Label `c` is scored on a lower scale than the others: only its own threshold can catch it."""
    rng = np.random.default_rng(seed)
    y = (rng.random((rows, 4)) < [0.4, 0.3, 0.25, 0.1]).astype(np.uint8)
    prob = np.clip(0.35 * y + 0.65 * rng.random(y.shape), 0, 1)
    prob[:, 2] *= 0.3
    return y, prob


def test_multi_hot_and_vocabulary():
    lists = [["Action", "Drama"], ["Drama"], ["Horror"], []]
    assert most_frequent_labels(lists, 2) == ["Drama", "Action"]
    y = multi_hot(lists, ["Drama", "Action"])
    assert y.tolist() == [[1, 1], [1, 0], [0, 0], [0, 0]]


def test_metrics_match_sklearn():
    y, prob = planted()
    thresholds = np.array([0.5, 0.4, 0.2, 0.6])
    pred = (prob >= thresholds).astype(int)
    m = evaluate(y, prob, thresholds, LABELS)
    for average in ("micro", "macro"):
        assert m[f"{average}_f1"] == pytest.approx(f1_score(y, pred, average=average))
        assert m[f"{average}_precision"] == pytest.approx(precision_score(y, pred, average=average))
        assert m[f"{average}_recall"] == pytest.approx(recall_score(y, pred, average=average))
    assert m["map"] == pytest.approx(average_precision_score(y, prob, average="macro"))
    for j, label in enumerate(LABELS):
        assert m[f"f1_{label}"] == pytest.approx(f1_score(y[:, j], pred[:, j]))


def test_resampled_f1_equals_sklearn_on_each_resample():
    # the bootstrap scores every resample at once from per-label counts; each must equal sklearn on that resample
    y, prob = planted(rows=40)
    y[:, 3] = 0  # a label never true: in some resamples never predicted either (sklearn's zero_division=0)
    pred = (prob >= 0.5).astype(bool)
    pred[:, 3] = prob[:, 3] > 0.97
    indices = np.random.default_rng(1).integers(0, 40, (30, 40))
    for average in ("micro", "macro"):
        got = resampled_f1(y.astype(bool), pred, indices, average)
        want = [f1_score(y[i], pred[i], average=average, zero_division=0) for i in indices]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    low, high = bootstrap_interval(y, prob, 0.5, n_boot=200)
    assert low <= f1_score(y, prob >= 0.5, average="micro") <= high and low < high


def test_top_k_accuracy_on_known_rows():
    y = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]])
    prob = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1], [0.1, 0.5, 0.9], [0.3, 0.2, 0.1]])
    assert top_k_accuracy(y, prob, 1) == pytest.approx(1 / 3)  # the row without labels is left out
    assert top_k_accuracy(y, prob, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(y, prob, 3) == pytest.approx(1.0)


def test_per_label_thresholds_beat_a_shared_one_on_a_planted_case():
    y_val, prob_val = planted(seed=1)
    y_test, prob_test = planted(seed=2)
    shared = tune_global_threshold(y_val, prob_val)
    for average in ("micro", "macro"):
        per_label = tune_thresholds(y_val, prob_val, average=average)
        assert per_label[2] < shared  # the down-scaled label got its own, lower threshold
        tuned = evaluate(y_test, prob_test, per_label, LABELS)[f"{average}_f1"]
        assert tuned > evaluate(y_test, prob_test, shared, LABELS)[f"{average}_f1"] + 0.02
    assert tune_thresholds(y_val, prob_val, "micro").tolist() != [shared] * 4


def test_micro_thresholds_reach_the_best_combination_on_a_small_grid():
    y, prob = planted(seed=3, rows=200)
    grid = np.array([0.1, 0.2, 0.3, 0.5, 0.7])
    tuned = evaluate(y, prob, tune_thresholds(y, prob, "micro", grid=grid), LABELS)["micro_f1"]
    brute = max(f1_score(y, (prob >= np.array(t)).astype(int), average="micro")
                for t in itertools.product(grid, repeat=4))
    assert tuned == pytest.approx(brute, abs=0.005)


def test_label_prior_baseline_is_the_best_constant_set():
    y_train, _ = planted(seed=4)
    y_val, _ = planted(seed=5)
    prior = label_prior(y_train, len(y_val))
    assert prior.shape == y_val.shape and np.allclose(prior[0], y_train.mean(axis=0))
    thresholds = tune_thresholds(y_val, prior)
    constant, best_f1 = best_constant_set(y_val)
    predicted = np.flatnonzero(prior[0] >= thresholds)
    assert predicted.tolist() == constant.tolist()
    assert evaluate(y_val, prior, thresholds, LABELS)["micro_f1"] == pytest.approx(best_f1)
    brute = max(f1_score(y_val, np.tile(np.isin(range(4), s), (len(y_val), 1)).astype(int), average="micro")
                for k in range(1, 5) for s in itertools.combinations(range(4), k))
    assert best_f1 == pytest.approx(brute)


def test_pr_curves_png(tmp_path):
    y, prob = planted()
    plot_pr_curves(y, prob, LABELS, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"
