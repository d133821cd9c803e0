import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics

from animeml.core.metrics import METRIC_NAMES, metrics_table, regression_metrics, write_tables


def test_regression_metrics_match_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    y_true = rng.uniform(5, 9, 50)
    y_pred = y_true + rng.normal(0, 0.5, 50)
    got = regression_metrics(y_true, y_pred, score_range=(1, 10))
    assert got["MAE"] == pytest.approx(metrics.mean_absolute_error(y_true, y_pred))
    assert got["RMSE"] == pytest.approx(np.sqrt(metrics.mean_squared_error(y_true, y_pred)))
    assert got["R2"] == pytest.approx(metrics.r2_score(y_true, y_pred))
    assert got["Pearson"] == pytest.approx(stats.pearsonr(y_true, y_pred)[0])
    assert got["Spearman"] == pytest.approx(stats.spearmanr(y_true, y_pred)[0])
    assert got["Kendall"] == pytest.approx(stats.kendalltau(y_true, y_pred)[0])
    assert got["MSE_minmax"] == pytest.approx(metrics.mean_squared_error(y_true, y_pred) / 81)


def test_known_values_and_constant_predictions():
    got = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0], score_range=(0, 10))
    assert got["MAE"] == pytest.approx(0.25) and got["RMSE"] == pytest.approx(0.5)
    assert got["Spearman"] == pytest.approx(1.0) and got["Kendall"] == pytest.approx(1.0)
    assert got["MSE_minmax"] == pytest.approx(0.0025)
    constant = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], score_range=(0, 10))
    assert np.isnan(constant["Spearman"]) and constant["MAE"] == pytest.approx(2 / 3)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_rows(tmp_path):
    rng = np.random.default_rng(1)
    widths = []
    for n in (40, 400):
        y_true = rng.uniform(5, 9, n)
        table = metrics_table(y_true, {"good": y_true + rng.normal(0, 0.3, n), "mean": np.full(n, 7.0)},
                              score_range=(1, 10), n_boot=200)
        good = table.set_index("model").loc["good"]
        for name in METRIC_NAMES:
            assert good[f"{name}_low"] <= good[name] <= good[f"{name}_high"], name
        widths.append(good["MAE_high"] - good["MAE_low"])
    assert widths[1] < widths[0]

    write_tables({"all rows": table}, tmp_path / "scores", title="T", notes=["a note"])
    assert set(pd.read_csv(tmp_path / "scores.csv")["rows"]) == {"all rows"}
    markdown = (tmp_path / "scores.md").read_text()
    assert "# T" in markdown and "| good | 400 |" in markdown and "- a note" in markdown


def test_resamples_scored_at_once_equal_one_by_one():
    # the bootstrap scores a (resamples, rows) matrix in one call; each row must score as it would alone
    rng = np.random.default_rng(2)
    y_true, y_pred = rng.uniform(5, 9, (6, 30)), rng.uniform(5, 9, (6, 30))
    y_true[1] = 7.0  # constant truth: R2 as sklearn's, correlations NaN
    y_pred[2] = 6.0  # constant predictions
    together = regression_metrics(y_true, y_pred, score_range=(1, 10))
    for i in range(len(y_true)):
        alone = regression_metrics(y_true[i], y_pred[i], score_range=(1, 10))
        for name in METRIC_NAMES:
            np.testing.assert_allclose(together[name][i], alone[name], rtol=1e-12, err_msg=name)
    assert together["R2"][1] == metrics.r2_score(y_true[1], y_pred[1]) == 0.0
    assert np.isnan(together["Pearson"][1]) and np.isnan(together["Kendall"][2])


def test_a_prediction_that_is_not_a_number_is_one_error_naming_the_model():
    from animeml.core.io import PipelineError

    y_true = np.array([5.0, 6.0, 7.0, 8.0])
    with pytest.raises(PipelineError, match=r"broken model: 1 of 4 values are not finite"):
        metrics_table(y_true, {"good": y_true + 0.1, "broken model": [5.0, np.nan, 7.0, 8.0]}, (1, 10), n_boot=10)
    with pytest.raises(PipelineError, match="true scores: 1 of 4"):
        metrics_table([5.0, 6.0, np.inf, 8.0], {"good": y_true}, (1, 10), n_boot=10)


def test_intervals_are_the_same_when_the_resamples_are_scored_in_small_blocks(monkeypatch):
    # memory stays bounded for any --n-boot: blocks of resamples give exactly the intervals of one block
    from animeml.characters.classifier import scores_with_intervals
    from animeml.core import metrics as metrics_module

    rng = np.random.default_rng(3)
    y_true = rng.uniform(5, 9, 50)
    predictions = {"model": y_true + rng.normal(0, 0.5, 50)}
    labels, scores = rng.integers(0, 4, 50), rng.random((50, 4))
    whole = metrics_table(y_true, predictions, (1, 10), n_boot=120), scores_with_intervals(labels, scores, n_boot=120)
    monkeypatch.setattr(metrics_module, "BOOTSTRAP_BLOCK", 50 * 7)  # 17 blocks of about 7 resamples
    assert len(metrics_module.bootstrap_blocks(np.zeros((120, 50), int))) == 17
    blocked = metrics_table(y_true, predictions, (1, 10), n_boot=120), scores_with_intervals(labels, scores, n_boot=120)
    pd.testing.assert_frame_equal(whole[0], blocked[0])
    assert whole[1] == blocked[1]
