"""Regression metrics with paired bootstrap 95% intervals, and the tables (CSV + Markdown) that report them.

    table = metrics_table(y_true, {"text model": pred_a, "mean baseline": pred_b}, score_range=(1.98, 9.1))
    write_tables(table, reports / "score_metrics", title="Score models on the grouped test split")

Every model of one table is scored on the same bootstrap resamples of the same rows, so their intervals compare.
"""
import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics

from animeml.core.io import atomic_path, write_csv

METRIC_NAMES = ["MAE", "RMSE", "R2", "Pearson", "Spearman", "Kendall", "MSE_minmax"]


def regression_metrics(y_true, y_pred, score_range):
    """MAE, RMSE, R2, the three correlations, and the MSE of scores min-max scaled by `score_range` (lo, hi):
    the scale the multimodal popularity paper reports. A correlation of constant predictions is NaN."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    lo, hi = score_range
    constant = np.ptp(y_pred) == 0 or np.ptp(y_true) == 0
    correlation = (lambda f: np.nan) if constant else (lambda f: f(y_true, y_pred)[0])
    return {
        "MAE": metrics.mean_absolute_error(y_true, y_pred),
        "RMSE": metrics.root_mean_squared_error(y_true, y_pred),
        "R2": metrics.r2_score(y_true, y_pred),
        "Pearson": correlation(stats.pearsonr),
        "Spearman": correlation(stats.spearmanr),
        "Kendall": correlation(stats.kendalltau),
        "MSE_minmax": metrics.mean_squared_error((y_true - lo) / (hi - lo), (y_pred - lo) / (hi - lo)),
    }


def bootstrap_indices(n, n_boot=1000, seed=0):
    """`n_boot` resamples (with replacement) of `n` row indices, shared by every model of a table."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_intervals(y_true, y_pred, score_range, indices, level=0.95):
    """Percentile interval of each metric over the resamples in `indices`: {name: (low, high)}; a correlation
    that is undefined on every resample (constant predictions) gets (NaN, NaN)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    samples = pd.DataFrame([regression_metrics(y_true[i], y_pred[i], score_range) for i in indices])
    tail = (1 - level) / 2 * 100
    return {name: tuple(np.nanpercentile(samples[name], [tail, 100 - tail])) if samples[name].notna().any()
            else (np.nan, np.nan) for name in METRIC_NAMES}


def metrics_table(y_true, predictions, score_range, n_boot=1000, seed=0):
    """One row per model: n, each metric and its bootstrap 95% interval (`<metric>_low`, `<metric>_high`)."""
    indices = bootstrap_indices(len(y_true), n_boot, seed)
    rows = []
    for model, y_pred in predictions.items():
        point = regression_metrics(y_true, y_pred, score_range)
        interval = bootstrap_intervals(y_true, y_pred, score_range, indices)
        row = {"model": model, "n": len(y_true)}
        for name in METRIC_NAMES:
            row[name], (row[f"{name}_low"], row[f"{name}_high"]) = point[name], interval[name]
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(table, metric_names=METRIC_NAMES, digits=3):
    """A Markdown table with one `value [low, high]` cell per metric; other columns are copied as they are."""
    plain = [c for c in table.columns if c not in metric_names and not c.endswith(("_low", "_high"))]
    header = plain + list(metric_names)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row[c]) for c in plain]
        cells += [f"{row[m]:.{digits}f} [{row[f'{m}_low']:.{digits}f}, {row[f'{m}_high']:.{digits}f}]"
                  for m in metric_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(sections, stem, title, notes=()):
    """Write `stem`.csv (all sections stacked, a `rows` column naming each) and `stem`.md (one table per
    section under `title`, then `notes`). `sections` maps a description of the rows to a metrics_table."""
    write_csv(pd.concat([t.assign(rows=name) for name, t in sections.items()], ignore_index=True),
              stem.with_suffix(".csv"))
    parts = [f"# {title}", ""]
    for name, table in sections.items():
        parts += [f"## {name}", "", markdown_table(table), ""]
    parts += [f"- {note}" for note in notes]
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
