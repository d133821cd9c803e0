"""Multi-label classification over any label vocabulary (genres, tags): multi-hot targets, metrics, thresholds
tuned for F1, and the label-prior baseline every model is measured against.

Arrays are `y_true` (n_rows x n_labels, 0/1) and `y_prob` (same shape, scores in 0..1). A prediction is
`y_prob >= threshold`, with one threshold per label or one shared by all.
"""
import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, precision_score, recall_score

THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def multi_hot(label_lists, vocabulary):
    """[['Action', 'Drama'], ...] -> (n_rows, len(vocabulary)) uint8; labels outside the vocabulary are dropped."""
    column = {label: i for i, label in enumerate(vocabulary)}
    y = np.zeros((len(label_lists), len(vocabulary)), dtype=np.uint8)
    for row, labels in enumerate(label_lists):
        for label in labels:
            if label in column:
                y[row, column[label]] = 1
    return y


def most_frequent_labels(label_lists, n):
    """The `n` most frequent labels, ties broken alphabetically so the vocabulary is reproducible."""
    counts = {}
    for labels in label_lists:
        for label in set(labels):
            counts[label] = counts.get(label, 0) + 1
    return sorted(counts, key=lambda label: (-counts[label], label))[:n]


def predict(y_prob, thresholds):
    """0/1 predictions; `thresholds` is a scalar or one value per label."""
    return (np.asarray(y_prob) >= np.asarray(thresholds)).astype(np.uint8)


def top_k_accuracy(y_true, y_prob, k):
    """Share of rows (with at least one true label) whose `k` highest-scored labels include a true one."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    has_label = y_true.sum(axis=1) > 0
    top = np.argsort(-y_prob[has_label], axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(y_true[has_label], top, axis=1).max(axis=1)
    return float(hits.mean()) if len(hits) else float("nan")


def mean_average_precision(y_true, y_prob):
    """Average precision per label, averaged over the labels that have at least one positive row."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    present = y_true.sum(axis=0) > 0
    return float(average_precision_score(y_true[:, present], y_prob[:, present], average="macro"))


def evaluate(y_true, y_prob, thresholds, labels):
    """Every metric of a thresholded multi-label prediction: micro/macro F1, precision and recall, mAP,
    top-1 and top-3 accuracy (threshold-free), and F1 per label as `f1_<label>`."""
    y_true = np.asarray(y_true)
    y_pred = predict(y_prob, thresholds)
    metrics = {}
    for average in ("micro", "macro"):
        metrics[f"{average}_f1"] = f1_score(y_true, y_pred, average=average, zero_division=0)
        metrics[f"{average}_precision"] = precision_score(y_true, y_pred, average=average, zero_division=0)
        metrics[f"{average}_recall"] = recall_score(y_true, y_pred, average=average, zero_division=0)
    metrics["map"] = mean_average_precision(y_true, y_prob)
    metrics["top1_accuracy"] = top_k_accuracy(y_true, y_prob, 1)
    metrics["top3_accuracy"] = top_k_accuracy(y_true, y_prob, 3)
    per_label = f1_score(y_true, y_pred, average=None, zero_division=0)
    metrics.update({f"f1_{label}": float(f) for label, f in zip(labels, per_label)})
    return {name: float(value) for name, value in metrics.items()}


def f1_from_counts(tp, fp, fn):
    """F1 from counts of true positives, false positives and false negatives (arrays alike); 0 where all are 0,
    as sklearn's zero_division=0."""
    return 2 * tp / np.maximum(2 * tp + fp + fn, 1)


def _middle_of_best(scores):
    """Index of the best score; among ties the middle one, so a threshold sits inside a plateau, not at its edge."""
    best = np.flatnonzero(np.isclose(scores, np.max(scores)))
    return int(best[len(best) // 2])


def _counts_per_threshold(y_true, y_prob, grid):
    """(n_labels, 3, len(grid)): true positives, false positives and false negatives of each label at each
    threshold."""
    pred = y_prob[:, :, None] >= grid[None, None, :]
    positive = y_true[:, :, None].astype(bool)
    tp = (pred & positive).sum(axis=0)
    fp = (pred & ~positive).sum(axis=0)
    fn = (~pred & positive).sum(axis=0)
    return np.stack([tp, fp, fn], axis=1)


def tune_global_threshold(y_true, y_prob, average="micro", grid=THRESHOLD_GRID):
    """The one threshold, shared by all labels, that maximises micro- or macro-F1 on (validation) data."""
    scores = [f1_score(y_true, predict(y_prob, t), average=average, zero_division=0) for t in grid]
    return float(grid[_middle_of_best(scores)])


def tune_thresholds(y_true, y_prob, average="micro", grid=THRESHOLD_GRID, sweeps=3):
    """One threshold per label, tuned on (validation) data for F1.

    `average="macro"`: each label's own F1 is maximised, which maximises macro-F1 since it is their mean.
    `average="micro"`: coordinate ascent on the pooled counts, starting from the best shared threshold, so a
    rare label is not given a low threshold that buys its own F1 with many false positives.
    """
    y_true, y_prob, grid = np.asarray(y_true), np.asarray(y_prob), np.asarray(grid)
    counts = _counts_per_threshold(y_true, y_prob, grid)
    if average == "macro":
        return np.array([grid[_middle_of_best(f1_from_counts(*c))] for c in counts])
    if average != "micro":
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
    labels = np.arange(y_true.shape[1])
    chosen = np.full(len(labels), int(np.flatnonzero(grid == tune_global_threshold(y_true, y_prob, "micro", grid))[0]))
    for _ in range(sweeps):
        changed = False
        for j in labels:
            at_chosen = counts[labels, :, chosen]
            rest = at_chosen.sum(axis=0) - at_chosen[j]
            f1 = f1_from_counts(*(rest[:, None] + counts[j]))
            best = _middle_of_best(f1)
            if f1[best] > f1[chosen[j]] + 1e-12:
                chosen[j], changed = best, True
        if not changed:
            break
    return grid[chosen]


def label_prior(y_train, n_rows):
    """The label-prior baseline: every row scores each label with its frequency in the training rows."""
    return np.tile(np.asarray(y_train, dtype=np.float64).mean(axis=0), (n_rows, 1))


def best_constant_set(y_true, average="micro"):
    """The one label set that, predicted for every row, scores the highest F1 on `y_true`, and that F1.

    Exact: with a constant prediction, a set of k labels gets the most true positives when it is the k most
    frequent labels, and the false positives depend on k only; so the best set is a prefix by frequency."""
    y_true = np.asarray(y_true)
    order = np.argsort(-y_true.sum(axis=0), kind="stable")
    best_set, best_f1 = order[:0], -1.0
    for k in range(1, y_true.shape[1] + 1):
        y_pred = np.zeros_like(y_true)
        y_pred[:, order[:k]] = 1
        f1 = f1_score(y_true, y_pred, average=average, zero_division=0)
        if f1 > best_f1:
            best_set, best_f1 = order[:k], float(f1)
    return np.sort(best_set), best_f1


def plot_pr_curves(y_true, y_prob, labels, path, title="Precision-recall per label"):
    """One precision-recall curve per label (average precision in the legend) into a PNG at `path`."""
    from matplotlib.figure import Figure

    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    for j, label in enumerate(labels):
        if y_true[:, j].sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(y_true[:, j], y_prob[:, j])
        ap = average_precision_score(y_true[:, j], y_prob[:, j])
        ax.plot(recall, precision, label=f"{label} (AP {ap:.2f})")
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bootstrap_interval(y_true, y_prob, thresholds, average="micro", n_boot=1000, seed=0, level=0.95):
    """Percentile interval of F1 over rows resampled with replacement (same resamples for every model when
    `seed` is the same)."""
    y_true, y_pred = np.asarray(y_true, bool), predict(y_prob, thresholds).astype(bool)
    indices = np.random.default_rng(seed).integers(0, len(y_true), size=(n_boot, len(y_true)))
    scores = resampled_f1(y_true, y_pred, indices, average)
    tail = (1 - level) / 2 * 100
    return tuple(float(v) for v in np.percentile(scores, [tail, 100 - tail]))


def resampled_f1(y_true, y_pred, indices, average="micro"):
    """sklearn's f1_score(y_true[i], y_pred[i], average, zero_division=0) for every row `i` of `indices`
    (resamples x rows), from per-label counts of each resample."""
    def counts(hits):
        return np.stack([hits[i].sum(axis=0) for i in indices]).astype(float)  # (resamples, labels)

    true_positives, true, predicted = counts(y_true & y_pred), counts(y_true), counts(y_pred)
    if average == "micro":
        true_positives, true, predicted = (c.sum(axis=1, keepdims=True) for c in (true_positives, true, predicted))
    elif average != "macro":
        raise ValueError(f"average must be 'micro' or 'macro', not {average!r}")
    return f1_from_counts(true_positives, predicted - true_positives, true - true_positives).mean(axis=1)
