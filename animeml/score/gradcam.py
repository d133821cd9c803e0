"""Grad-CAM and Grad-CAM++ (tf_keras_vis) for score models whose image features come from a nested "backbone",
plus where the heat falls on a poster (centre vs border, detected anime faces vs elsewhere).

tf_keras_vis finds its target by a layer's `.output`, which for a layer inside a nested Keras 3 model belongs
to the nested graph, not the outer one, so it cannot be differentiated from the outer inputs. `flat_view`
therefore re-wires the model (sharing its weights): the backbone is split at its last 4-D layer into two
models with an Identity layer named TARGET between them, all at the top level of one functional model.

The models predict a score (regression), so the maps show where the pixels push the predicted score up.
"""
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus

from animeml.core.backbones import last_conv_layer_name
from animeml.core.io import PipelineError, atomic_path

TARGET = "gradcam_target"
METHODS = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus}
CENTRE = 0.5  # the centre box spans the middle half of the width and of the height (a quarter of the area)
OVERLAY_ALPHA = 0.45


def flat_view(model):
    """The same model (same weights) with the backbone's last spatial output as a top-level layer TARGET."""
    names = [layer.name for layer in model.layers]
    if "backbone" not in names:
        raise PipelineError(f"model {model.name} has no layer named 'backbone' to explain")
    backbone = model.get_layer("backbone")
    target = backbone.get_layer(last_conv_layer_name(backbone))
    lower = keras.Model(backbone.inputs, target.output, name="backbone_to_target")
    upper = keras.Model(target.output, backbone.output, name="target_to_features")

    def call(layer, *args, **kwargs):
        if layer.name != "backbone":
            return layer(*args, **kwargs)
        return upper(keras.layers.Identity(name=TARGET)(lower(*args, **kwargs)))

    return keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)


def class_activation_maps(flat_model, images, method="gradcam", batch_size=16):
    """Maps (N, h, w) at the target layer's resolution, each scaled to 0..1, for images (N, H, W, 3) in 0..255."""
    visualizer = METHODS[method](flat_model, clone=False)
    maps = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype=np.float32)
        maps.append(visualizer(lambda score: score[:, 0], batch, penultimate_layer=TARGET,
                               seek_penultimate_conv_layer=False, expand_cam=False))
    return np.concatenate(maps)


def resize_map(heatmap, height, width):
    """A map resized (bilinear) to a poster's size, still 0..1."""
    import cv2

    return np.clip(cv2.resize(np.asarray(heatmap, np.float32), (width, height), interpolation=cv2.INTER_LINEAR),
                   0.0, 1.0)


def face_mask(faces, height, width):
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h, _ in faces:
        mask[int(y):int(y + h), int(x):int(x + w)] = True
    return mask


def heat_statistics(heatmap, faces):
    """Where the heat of one poster-sized map falls. Shares are of the total heat; an area share next to each
    tells what a uniform map would give (face_heat_share > face_area_share: the model looks at faces)."""
    height, width = heatmap.shape
    total = float(heatmap.sum()) or 1.0
    top, left = round(height * (1 - CENTRE) / 2), round(width * (1 - CENTRE) / 2)
    centre = float(heatmap[top:height - top, left:width - left].sum()) / total
    mask = face_mask(faces, height, width)
    peak_y, peak_x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    return {
        "centre_heat_share": centre, "border_heat_share": 1 - centre,
        "centre_area_share": (height - 2 * top) * (width - 2 * left) / (height * width),
        "n_faces": len(faces), "face_heat_share": float(heatmap[mask].sum()) / total,
        "face_area_share": float(mask.mean()), "peak_x": peak_x / width, "peak_y": peak_y / height,
    }


def overlay(rgb, heatmap, faces=()):
    """The poster with the map blended on top (jet colours) and detected faces boxed, RGB uint8."""
    from matplotlib import colormaps

    from animeml.core.faces import draw_boxes

    colours = colormaps["jet"](heatmap)[..., :3] * 255
    blended = (1 - OVERLAY_ALPHA) * rgb.astype(np.float32) + OVERLAY_ALPHA * colours
    blended = np.clip(blended, 0, 255).astype(np.uint8)
    return draw_boxes(blended, faces, labels=["face"] * len(faces), color=(255, 255, 255)) if len(faces) else blended


def save_png(rgb, path):
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def pick_examples(predictions, per_group):
    """The `per_group` best-, worst- and most typically-predicted rows (typical: absolute error nearest the
    median absolute error) of a table with `score` and `predicted`, with a `group` column."""
    error = (predictions["predicted"] - predictions["score"]).abs()
    median = error.median()
    order = {"best": error.sort_values().index, "worst": error.sort_values(ascending=False).index,
             "typical": (error - median).abs().sort_values().index}
    picked, used = [], set()
    for group, index in order.items():
        chosen = [i for i in index if i not in used][:per_group]
        used.update(chosen)
        picked.append(predictions.loc[chosen].assign(group=group))
    return pd.concat(picked)


def explain_posters(model, posters, image_size, out_dir, cascade=None):
    """Grad-CAM and Grad-CAM++ of every row of `posters` (image_path, group, optional score, anime_id, name):
    one overlay PNG per poster and method in `out_dir`, the grid figure `out_dir`/gradcam_grid.png, and a table
    with one row per poster and method (predicted score and `heat_statistics`)."""
    from PIL import Image

    from animeml.core.faces import detect_faces, load_cascade
    from animeml.core.images import load_image

    cascade = load_cascade() if cascade is None else cascade
    inputs = np.stack([load_image(str(path), image_size).numpy() for path in posters["image_path"]])
    predicted = model.predict(inputs, verbose=0)[:, 0]
    flat = flat_view(model)
    maps = {method: class_activation_maps(flat, inputs, method) for method in METHODS}
    rows, grid = [], []
    for i, poster in enumerate(posters.to_dict("records")):
        rgb = np.asarray(Image.open(poster["image_path"]).convert("RGB"))
        faces = detect_faces(rgb, cascade)
        grid.append({"title": f"{poster['group']}: true {poster.get('score', np.nan):.2f}, "
                              f"pred {predicted[i]:.2f}", "poster": rgb})
        for method in METHODS:
            heatmap = resize_map(maps[method][i], *rgb.shape[:2])
            grid[-1][method] = overlay(rgb, heatmap, faces)
            png = Path(out_dir) / f"{i:02d}_{poster['group']}_{Path(poster['image_path']).stem}_{method}.png"
            save_png(grid[-1][method], png)
            rows.append({"group": poster["group"], "image_path": poster["image_path"],
                         "anime_id": poster.get("anime_id"), "name": poster.get("name"), "method": method,
                         "true_score": poster.get("score", np.nan), "predicted_score": predicted[i],
                         "overlay_png": png.name, **heat_statistics(heatmap, faces)})
    plot_grid(grid, Path(out_dir) / "gradcam_grid.png")
    return pd.DataFrame(rows).astype({"anime_id": "Int64"})


def plot_grid(rows, path):
    """One row per poster: the poster and one overlay per method, titled with group, true and predicted score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["poster", *METHODS]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.6 * len(columns), 3.4 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        for ax, column in zip(ax_row, columns):
            ax.imshow(row[column])
            ax.set_axis_off()
            ax.set_title(column if column != "poster" else row["title"], fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
