"""An `unknown` answer for a character classifier: a face whose best softmax probability is under a threshold is
named `unknown` instead of its nearest known character.

The threshold is chosen on validation faces of the known characters only (`choose_threshold`): the highest one
that still keeps `keep` of their correctly named faces named. `open_set_report` then measures, on test faces, the
accuracy on the known characters (an `unknown` answer counts as wrong) next to how often faces of characters the
model never saw are wrongly given a name; `open_set_curve` does so for several validation rules, which shows what a
stricter threshold costs the known characters.

`keep_for_unknown_rate` chooses the rule from a target instead: models trained with some known characters left out
(calibration folds) show where faces of characters a model never saw fall among the confidences of the faces it
names right, and the rule is the one under which about `rate` of them would still get a name. This is open-set
validation with held-out classes: no test face and no face of the characters held out for the report is used.
"""
import numpy as np
import pandas as pd

UNKNOWN = "unknown"
CURVE_KEEPS = (0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5)


def choose_threshold(probabilities, y_true, keep=0.95):
    """The confidence threshold that keeps `keep` of the correctly named validation faces named: the
    (1 - keep) quantile of their best probabilities (0.0 when no face is named correctly)."""
    probabilities = np.asarray(probabilities)
    right = probabilities.argmax(axis=1) == np.asarray(y_true)
    if not right.any():
        return 0.0
    return float(np.quantile(probabilities.max(axis=1)[right], 1 - keep, method="lower"))


def character_folds(n_characters, folds, seed=0):
    """`folds` disjoint arrays of character ids (a seeded shuffle of 0..n-1, cut into near-equal parts): each is
    left out of one calibration model, which must still know at least two characters."""
    if not 2 <= folds <= n_characters or n_characters - -(-n_characters // folds) < 2:
        raise ValueError(f"{folds} calibration folds of {n_characters} characters leave a model fewer than two "
                         "characters to learn")
    return np.array_split(np.random.default_rng(seed).permutation(n_characters), folds)


def keep_for_unknown_rate(folds, rate):
    """The validation rule `keep` (as choose_threshold takes it) under which about `rate` of the faces of unseen
    characters get a name. `folds`: one `(probabilities, y_true, unseen_probabilities)` per calibration model, on
    validation faces of the characters it knows and of those it was trained without. Each unseen face is placed
    among its model's correctly named faces (the share of them at or below its confidence); pooled over the folds,
    the rule keeps named the correct faces above the (1 - rate) quantile of those places."""
    places = []
    for probabilities, y_true, unseen in folds:
        probabilities = np.asarray(probabilities)
        right = np.sort(probabilities.max(axis=1)[probabilities.argmax(axis=1) == np.asarray(y_true)])
        if len(right):
            places.append(np.searchsorted(right, np.asarray(unseen).max(axis=1), side="right") / len(right))
    if not places or not sum(map(len, places)):
        raise ValueError("no calibration fold has both a correctly named face and a face of an unseen character")
    return float(np.clip(1 - np.quantile(np.concatenate(places), 1 - rate), 0.0, 1.0))


def name_or_unknown(probabilities, names, threshold):
    """The best name of each row, or UNKNOWN where its probability is under `threshold`."""
    probabilities = np.asarray(probabilities)
    best = np.asarray(names, dtype=object)[probabilities.argmax(axis=1)]
    return np.where(probabilities.max(axis=1) >= threshold, best, UNKNOWN)


def _rates(known_right, known_named, unknown_named):
    return {"known_accuracy": float(np.mean(known_right)), "known_named": float(np.mean(known_named)),
            "unknown_named": float(np.mean(unknown_named))}


def open_set_report(known_probabilities, known_y, unknown_probabilities, threshold, n_boot=1000, seed=0,
                    level=0.95):
    """On test faces: `known_accuracy` (a known character's face named right; `unknown` counts as wrong),
    `known_named` (share of known faces given a name) and `unknown_named` (share of faces of unseen characters
    wrongly given a name), each with a percentile bootstrap interval (`_low`, `_high`; known and unknown faces
    resampled apart), and the threshold and face counts."""
    known, unknown = np.asarray(known_probabilities), np.asarray(unknown_probabilities)
    known_named = known.max(axis=1) >= threshold
    known_right = known_named & (known.argmax(axis=1) == np.asarray(known_y))
    unknown_named = unknown.max(axis=1) >= threshold
    point = _rates(known_right, known_named, unknown_named)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        k, u = rng.integers(0, len(known), len(known)), rng.integers(0, len(unknown), len(unknown))
        samples.append(_rates(known_right[k], known_named[k], unknown_named[u]))
    samples = pd.DataFrame(samples)
    tail = (1 - level) / 2 * 100
    report = {"threshold": float(threshold), "known_faces": len(known), "unknown_faces": len(unknown)}
    for name, value in point.items():
        report[name] = value
        report[f"{name}_low"], report[f"{name}_high"] = (float(v) for v in np.percentile(samples[name],
                                                                                          [tail, 100 - tail]))
    return report


def open_set_curve(val_probabilities, val_y, known_probabilities, known_y, unknown_probabilities, keeps=CURVE_KEEPS,
                   n_boot=1000, seed=0):
    """One open_set_report row per validation rule `keep` (the share of correctly named validation faces the
    threshold keeps named), from the strictest to the loosest threshold."""
    rows = [{"keep_known": keep, **open_set_report(known_probabilities, known_y, unknown_probabilities,
                                                   choose_threshold(val_probabilities, val_y, keep), n_boot, seed)}
            for keep in keeps]
    return pd.DataFrame(rows).sort_values("threshold", ascending=False, ignore_index=True)
