"""What a score model relies on: permutation importance per input group, and first-layer weight norms.

Permutation importance shuffles one group across the rows of the test set (for the poster: which poster goes
with which row; for metadata groups: the group's columns, missing indicator included, move together) and
measures how much the MAE grows. It is measured on held-out rows, so it shows what the model uses, not what it
memorised.

Weight norms are read from every "first" Dense layer: one whose input columns come straight from model inputs
(or the poster backbone's features) through concatenations and column-wise layers (dropout, normalisation,
activations). In the hybrid model these are the frozen text model's first Dense (metadata + synopsis) and the
poster-correction Dense after Concatenate([backbone features, metadata, synopsis]). Norms compare groups only
as far as their inputs share a scale (metadata is z-scored or 0/1, synopsis vectors have unit length, poster
features are unscaled pooled activations).
"""
import keras
import numpy as np
import pandas as pd
from scipy import stats

from animeml.core.backbones import above_backbone
from animeml.core.io import PipelineError, atomic_path

POSTER = "poster"
COLUMN_WISE = (keras.layers.Dropout, keras.layers.BatchNormalization, keras.layers.Normalization,
               keras.layers.GaussianNoise, keras.layers.Activation, keras.layers.ReLU, keras.layers.Identity)


def input_groups(sidecar):
    """{group: (input name, (start, end) or None)}: the poster, the synopsis and each metadata group."""
    groups = {}
    if "image" in sidecar["inputs"]:
        groups[POSTER] = ("image", None)
    for group, (start, end) in sidecar.get("input_groups", {}).items():
        groups[group] = ("metadata", (start, end))
    if "synopsis" in sidecar["inputs"]:
        groups["synopsis"] = ("synopsis", None)
    return groups


def permuted(inputs, name, columns, order):
    """A copy of `inputs` with the rows of one input (or of its `columns` [start, end) only) put in `order`."""
    values = inputs[name].copy()
    if columns is None:
        values = values[order]
    else:
        start, end = columns
        values[:, start:end] = values[order, start:end]
    return {**inputs, name: values}


def split_at_backbone(model):
    """(backbone, predict) for a model whose image input goes straight into a nested layer named "backbone":
    `predict(inputs, **predict_kwargs)` takes the backbone's features in place of the images, with the model's
    other inputs, in a dict by the same names. The backbone then runs once per image instead of once per
    permutation (permuting the posters permutes their features). (None, model.predict) for any other model, and
    for a model of the image alone (nothing to permute beside it)."""
    after = above_backbone(model) if isinstance(model.input, dict) else None
    if after is None:
        return None, model.predict
    return model.get_layer("backbone"), after.predict


def permutation_importance(predict, inputs, targets, groups, repeats=5, seed=0, confidence=0.95):
    """Mean increase of the MAE when each group is permuted, with a t-interval over `repeats` permutations.

    `predict` maps a dict of input arrays (rows aligned) to a 1-D array of predictions; `groups` is
    {group: (input name, (start, end) or None)} as from `input_groups`.
    """
    if repeats < 2:
        raise PipelineError("permutation importance needs at least 2 repeats for an interval")
    targets = np.asarray(targets, dtype=np.float64)
    base_mae = np.abs(predict(inputs) - targets).mean()
    rng = np.random.default_rng(seed)
    rows = []
    for group, (name, columns) in groups.items():
        increases = np.array([np.abs(predict(permuted(inputs, name, columns, rng.permutation(len(targets))))
                                     - targets).mean() - base_mae for _ in range(repeats)])
        mean = increases.mean()
        half = stats.t.ppf((1 + confidence) / 2, repeats - 1) * increases.std(ddof=1) / np.sqrt(repeats)
        rows.append({"group": group, "input": name,
                     "n_columns": (columns[1] - columns[0]) if columns else inputs[name][0].size,
                     "mae_increase": mean, "ci_low": mean - half, "ci_high": mean + half,
                     "relative_increase": mean / base_mae, "base_mae": base_mae, "repeats": repeats,
                     "n_rows": len(targets)})
    return pd.DataFrame(rows).sort_values("mae_increase", ascending=False, ignore_index=True)


def column_sources(tensor):
    """[(source, width), ...] covering the last axis of a symbolic tensor: concatenations and column-wise layers
    are followed back to a model input (by its name) or to the nested "backbone"; anything else is "hidden"."""
    layer = tensor._keras_history.operation
    width = tensor.shape[-1]
    if isinstance(layer, keras.layers.InputLayer) or layer.name == "backbone":
        return [(layer.name, width)]
    inbound = layer._inbound_nodes[tensor._keras_history.node_index].input_tensors
    if isinstance(layer, keras.layers.Concatenate) and layer.axis in (-1, len(tensor.shape) - 1):
        return [segment for part in inbound for segment in column_sources(part)]
    if isinstance(layer, COLUMN_WISE):
        return column_sources(inbound[0])
    return [("hidden", width)]


def dense_layers(model, prefix=""):
    """(path, layer) of every Dense layer in `model` and its nested models, the image backbone excepted."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name != "backbone":
            yield from dense_layers(layer, f"{prefix}{layer.name}/")
        elif isinstance(layer, keras.layers.Dense):
            yield f"{prefix}{layer.name}", layer


def first_layer_weight_norms(model, groups):
    """Per first Dense layer and group: the Frobenius norm of the kernel rows fed by the group's columns, and
    that norm per column (norm / sqrt(columns)), so groups of different widths compare."""
    metadata_groups = {g: cols for g, (name, cols) in groups.items() if name == "metadata"}
    rows = []
    for path, layer in dense_layers(model):
        kernel = np.asarray(layer.kernel)
        offset = 0
        for source, width in column_sources(layer.input):
            if source == "metadata":
                parts = {g: (offset + start, offset + end) for g, (start, end) in metadata_groups.items()}
            elif source in ("image", "backbone"):
                parts = {POSTER: (offset, offset + width)}
            elif source != "hidden":
                parts = {source: (offset, offset + width)}
            else:
                parts = {}
            for group, (start, end) in parts.items():
                norm = float(np.linalg.norm(kernel[start:end]))
                rows.append({"layer": path, "group": group, "n_columns": end - start, "weight_norm": norm,
                             "norm_per_column": norm / np.sqrt(end - start)})
            offset += width
    if not rows:
        raise PipelineError(f"model {model.name} has no Dense layer fed directly by its inputs")
    return pd.DataFrame(rows)


def plot_importance(importance, norms, path, title):
    """Left: permutation importance with its interval; right: first-layer weight norm per column, per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    importance = importance.sort_values("mae_increase")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.35 * len(importance) + 1.8))
    errors = [importance["mae_increase"] - importance["ci_low"], importance["ci_high"] - importance["mae_increase"]]
    left.barh(importance["group"], importance["mae_increase"], xerr=errors, color="tab:blue", capsize=3)
    left.axvline(0, color="black", linewidth=0.8)
    left.set_xlabel(f"test MAE increase when permuted (base MAE {importance['base_mae'].iloc[0]:.3f})")
    order = {group: i for i, group in enumerate(importance["group"])}
    layers = norms["layer"].unique()
    height = 0.8 / len(layers)
    for i, layer in enumerate(layers):
        part = norms[norms["layer"] == layer]
        positions = [order.get(g, -1) + (i - (len(layers) - 1) / 2) * height for g in part["group"]]
        right.barh(positions, part["norm_per_column"], height=height, label=layer)
    right.set_yticks(range(len(order)), list(order))
    right.set_xlabel("first-layer weight norm per input column")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
