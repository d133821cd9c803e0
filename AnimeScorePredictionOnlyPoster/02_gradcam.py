"""Step 02 (poster only): Grad-CAM and Grad-CAM++ heatmaps of the vision-only score model.

    python AnimeScorePredictionOnlyPoster/02_gradcam.py --per-group 4 --images some_poster.jpg

Predicts every test poster (the saved score split), then explains the best-, worst- and typically-predicted
ones (and any --images). Writes to data/reports/gradcam/: one overlay PNG per poster and method (poster size,
anime faces boxed), gradcam_grid.png, and gradcam_posters.csv with one row per poster and method: true and
predicted score and where the heat falls (centre vs border, on detected faces vs elsewhere, with the area
shares a uniform map would give). The maps show which pixels push the predicted score up.
"""
import argparse
from pathlib import Path

import pandas as pd

from animeml.core import paths
from animeml.core.io import PipelineError, write_csv
from animeml.core.cli import run
from animeml.core.faces import DEFAULT_CASCADE, load_cascade
from animeml.score.gradcam import explain_posters, pick_examples
from animeml.score.models import load_score_model, model_path, predict_scores, scored_poster_rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=model_path("vision"), help="vision-only score model (.h5)")
    parser.add_argument("--merged", type=Path, default=paths.merged_csv(), help="output of step 03")
    parser.add_argument("--per-group", type=int, default=4, help="posters each for best, worst and typical")
    parser.add_argument("--images", type=Path, nargs="*", default=[], help="more posters to explain")
    parser.add_argument("--face-cascade", type=Path, default=DEFAULT_CASCADE)
    parser.add_argument("--out", type=Path, default=paths.reports_dir() / "gradcam")
    args = parser.parse_args()
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise PipelineError(f"--images not found: {', '.join(missing)}")

    model, sidecar = load_score_model("vision", args.model)
    table, split = scored_poster_rows(args.merged)
    test = table[split == "test"].reset_index(drop=True)
    if test.empty:
        raise PipelineError("no scored test posters in the saved score split")
    test["predicted"] = predict_scores(model, sidecar, test, test["image_path"])
    test_mae = (test["predicted"] - test["score"]).abs().mean()
    baseline_mae = (sidecar["score_train_mean"] - test["score"]).abs().mean()

    # Posters to explain: the picked test posters, then --images (with their true score when they are scored)
    known = table.assign(key=[str(Path(p).resolve()) for p in table["image_path"]]).drop_duplicates("key")
    extra = pd.DataFrame({"key": [str(p.resolve()) for p in args.images]})
    extra = extra.merge(known.drop(columns="image_path"), on="key", how="left")
    extra = extra.assign(image_path=[str(p) for p in args.images], group="extra").drop(columns="key")
    chosen = pd.concat([pick_examples(test, args.per_group), extra], ignore_index=True)

    explained = explain_posters(model, chosen, sidecar["image_size"], args.out, load_cascade(args.face_cascade))
    write_csv(explained, args.out / "gradcam_posters.csv")

    gradcam = explained[explained["method"] == "gradcam"]
    print(f"test MAE {test_mae:.3f} over {len(test)} posters (train-mean baseline {baseline_mae:.3f}); "
          f"explained {len(chosen)} posters into {args.out}: Grad-CAM heat on faces "
          f"{gradcam['face_heat_share'].mean():.2f} (area {gradcam['face_area_share'].mean():.2f}), "
          f"centre {gradcam['centre_heat_share'].mean():.2f} (area {gradcam['centre_area_share'].mean():.2f})")


if __name__ == "__main__":
    run(main)
