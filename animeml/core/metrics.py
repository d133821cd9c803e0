"""Regression metrics with paired bootstrap 95% intervals, and the tables (CSV + Markdown) that report them.

    table = metrics_table(y_true, {"text model": pred_a, "mean baseline": pred_b}, score_range=(1.98, 9.1))
    write_tables(table, reports / "score_metrics", title="Score models on the grouped test split")

Every model of one table is scored on the same bootstrap resamples of the same rows, so their intervals compare.
"""
import numpy as np
import pandas as pd
from scipy import stats

from animeml.core.io import PipelineError, atomic_path, write_csv

METRIC_NAMES = ["MAE", "RMSE", "R2", "Pearson", "Spearman", "Kendall", "MSE_minmax"]
BOOTSTRAP_BLOCK = 2_000_000  # resampled rows scored at once: a few arrays of 16 MB, whatever --n-boot asks


def regression_metrics(y_true, y_pred, score_range):
    """MAE, RMSE, R2, the three correlations, and the MSE of scores min-max scaled by `score_range` (lo, hi):
    the scale the multimodal popularity paper reports. A correlation of constant predictions is NaN.

    Computed along the last axis: 1-D arrays give one number per metric, (resamples, rows) arrays one per resample
    (the bootstrap scores all its resamples in one call; the formulas are sklearn's and scipy's)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    lo, hi = score_range
    error = y_pred - y_true
    squared = np.mean(error ** 2, axis=-1)
    total = np.sum((y_true - y_true.mean(axis=-1, keepdims=True)) ** 2, axis=-1)
    residual = squared * y_true.shape[-1]
    # sklearn's r2_score on constant truth: 1 for a perfect fit, else 0
    r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual == 0, 1.0, 0.0))
    constant = (np.ptp(y_pred, axis=-1) == 0) | (np.ptp(y_true, axis=-1) == 0)
    ranks = (stats.rankdata(y_true, axis=-1), stats.rankdata(y_pred, axis=-1))
    kendall = np.array([stats.kendalltau(t, p)[0] if not c else np.nan for t, p, c in
                        zip(np.atleast_2d(y_true), np.atleast_2d(y_pred), np.atleast_1d(constant))])
    values = {
        "MAE": np.mean(np.abs(error), axis=-1),
        "RMSE": np.sqrt(squared),
        "R2": r2,
        "Pearson": np.where(constant, np.nan, pearson(y_true, y_pred)),
        "Spearman": np.where(constant, np.nan, pearson(*ranks)),
        "Kendall": kendall.reshape(constant.shape),
        "MSE_minmax": squared / (hi - lo) ** 2,
    }
    return {name: float(value) if np.ndim(value) == 0 else value for name, value in values.items()}


def pearson(a, b):
    """Pearson correlation along the last axis (NaN where either side is constant), clipped to [-1, 1] as scipy's."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.sum(a * b, axis=-1) / np.sqrt(np.sum(a * a, axis=-1) * np.sum(b * b, axis=-1)), -1, 1)


def bootstrap_indices(n, n_boot=1000, seed=0):
    """`n_boot` resamples (with replacement) of `n` row indices, shared by every model of a table."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_blocks(indices):
    """`indices` (resamples x rows) cut into blocks of whole resamples of about BOOTSTRAP_BLOCK rows in all, so a
    vectorised bootstrap's memory stays bounded however many resamples it is asked for."""
    return np.array_split(indices, min(len(indices), max(1, indices.size // BOOTSTRAP_BLOCK)))


def bootstrap_samples(score, indices):
    """{name: one value per resample} over all of `indices`, from `score(block)`, which returns such a dict for a
    block of resamples; the blocks (bootstrap_blocks) keep memory bounded."""
    blocks = [score(block) for block in bootstrap_blocks(indices)]
    return {name: np.concatenate([block[name] for block in blocks]) for name in blocks[0]}


def bootstrap_intervals(y_true, y_pred, score_range, indices, level=0.95):
    """Percentile interval of each metric over the resamples in `indices`: {name: (low, high)}; a correlation
    that is undefined on every resample (constant predictions) gets (NaN, NaN)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    samples = bootstrap_samples(lambda block: regression_metrics(y_true[block], y_pred[block], score_range), indices)
    tail = (1 - level) / 2 * 100
    return {name: tuple(np.nanpercentile(samples[name], [tail, 100 - tail])) if np.isfinite(samples[name]).any()
            else (np.nan, np.nan) for name in METRIC_NAMES}


def metrics_table(y_true, predictions, score_range, n_boot=1000, seed=0):
    """One row per model: n, each metric and its bootstrap 95% interval (`<metric>_low`, `<metric>_high`)."""
    indices = bootstrap_indices(len(y_true), n_boot, seed)
    rows = []
    for model, y_pred in {"true scores": y_true, **predictions}.items():
        broken = int(np.sum(~np.isfinite(np.asarray(y_pred, float))))
        if broken:
            raise PipelineError(f"{model}: {broken} of {len(y_true)} values are not finite numbers, so no metric of "
                                "them means anything")
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
