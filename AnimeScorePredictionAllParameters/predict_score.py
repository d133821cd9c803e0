"""Predict the MyAnimeList score of new anime with a trained score model.

    python AnimeScorePredictionAllParameters/predict_score.py --kind hybrid --csv new.csv --images posters/ \
        --out scores.csv

CSV: rows in the Kaggle "Anime Dataset 2023" layout (`UNKNOWN` where a value is not known yet); a model that reads
synopses needs the `Synopsis` column, one that reads metadata `Genres`, `Type` and `Episodes`. The poster of a row
is its `image_path` column when the CSV has one (relative paths are relative to the CSV's folder), else
IMAGES/<anime_id>.jpg. The text model needs no poster: use it for anime without one.
Writes anime_id, name, predicted_score, status and reason: a row that cannot be scored (no poster, an image that is
not readable, truncated or above 40 megapixels, neither synopsis nor metadata) gets status `skipped` and the reason,
never a crash. The exit status is 2 only when no row could be scored.
"""
from pathlib import Path

from animeml.core import cli

KINDS = ["hybrid", "vision", "text"]
SETTINGS = dict(kind="hybrid", batch_size=32)
TRAIN_STEPS = {"text": "AnimeScorePredictionAllParameters/04_train_text_model.py",
               "hybrid": "AnimeScorePredictionAllParameters/05_train_hybrid_model.py",
               "vision": "AnimeScorePredictionOnlyPoster/01_train_vision_model.py"}
NEEDED_COLUMNS = {"synopsis": ["Synopsis"], "metadata": ["Genres", "Type", "Episodes"]}
CHUNK_ROWS = 1024  # rows per prediction call: the posters of one call are decoded together


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--kind", choices=KINDS, default=SETTINGS["kind"],
                        help="which trained model: its default file and the step that makes it")
    parser.add_argument("--model", help="a model .h5 with its .json sidecar (default: data/models/<the --kind's "
                                        "file>); a kind name here is the deprecated spelling of --kind")
    parser.add_argument("--model-path", help="deprecated spelling of --model")
    parser.add_argument("--csv", type=Path, required=True, help="anime rows in the Kaggle 2023 layout")
    parser.add_argument("--images", type=Path, help="folder of posters named <anime_id>.jpg")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write, one row per input row")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"],
                        help="rows per model batch")
    args = cli.parse(parser, argv)

    from animeml.core.io import PipelineError

    if args.model in KINDS and not Path(args.model).exists():
        cli.warn_deprecated(f"--model {args.model}", f"--kind {args.model} (--model is a file)")
        args.kind, args.model = args.model, None
    if args.model_path:
        cli.warn_deprecated("--model-path", "--model")
        args.model = args.model_path
    if args.csv.is_dir():
        raise PipelineError(f"{args.csv} is a folder; --csv takes a CSV file")
    if args.csv.is_file() and not args.csv.read_bytes().strip():
        raise PipelineError(f"{args.csv} is empty; it needs a header row and one row per anime")
    if args.images is not None and not args.images.is_dir():
        raise PipelineError(f"--images {args.images} is not a folder")

    import numpy as np
    import pandas as pd

    from animeml.core import batch, store
    from animeml.core.imagefile import TF_FORMATS, check_image
    from animeml.core.table import clean_table, read_kaggle_csv
    from animeml.score.features import model_inputs, model_path, synopses_ahead

    batch.check_out(args.out)
    model_file = Path(args.model) if args.model else model_path(args.kind)
    # the sidecar alone says which columns and sentence model the model reads: no TensorFlow needed yet
    _, sidecar = batch.load_model_for(lambda path: (None, store.read_model_sidecar(path)), model_file,
                                      TRAIN_STEPS[args.kind], ["inputs"])
    needed = [column for group in sidecar["inputs"] for column in NEEDED_COLUMNS.get(group, [])]
    try:
        raw = read_kaggle_csv(args.csv, required=["anime_id", "Name", *needed])  # new anime have no Score
    except (pd.errors.EmptyDataError, OSError) as err:
        raise PipelineError(f"cannot read {args.csv}: {getattr(err, 'strerror', None) or err}") from None
    table = clean_table(raw).reset_index(drop=True)
    if table.empty:
        raise PipelineError(f"{args.csv} has a header but no rows")

    # New synopses are embedded by a child process on the other core while this one starts TensorFlow, loads the
    # model and encodes the metadata (690 new synopses on two cores: 30 -> 28 s, median of six runs each, for the
    # model; the metadata's title TF-IDF and scikit-learn's imports add 2-3 s). Each input is encoded once for the
    # whole table: one TF-IDF fit, one read of the embedding cache.
    with synopses_ahead(table, sidecar):
        from animeml.score.models import load_score_model, nothing_known, predict_scores

        model, sidecar = batch.load_model_for(lambda path: load_score_model(args.kind, path), model_file,
                                              TRAIN_STEPS[args.kind], ["inputs"])
        inputs = model_inputs(table, sidecar, only=["metadata"])
    inputs.update(model_inputs(table, sidecar, only=["synopsis"]))
    reasons = [""] * len(table)
    posters = poster_paths(args.csv, table, args.images) if "image" in sidecar["inputs"] else None
    if "metadata" in sidecar["inputs"]:
        for i in np.flatnonzero(nothing_known(table, sidecar, inputs["metadata"])):
            reasons[i] = "neither synopsis nor metadata (genres, type, episodes, ...) is known"

    def load(i):
        if reasons[i]:
            raise PipelineError(reasons[i])
        if posters is not None:
            if posters[i] is None:
                raise PipelineError("no poster given in image_path")
            if not posters[i].exists():
                raise PipelineError(f"no poster: {posters[i]} not found")
            check_image(posters[i], formats=TF_FORMATS)
        return i

    def predict(rows):
        scores = predict_scores(model, sidecar, table.iloc[rows].reset_index(drop=True),
                                [posters[i] for i in rows] if posters is not None else None, args.batch_size,
                                inputs={name: values[rows] for name, values in inputs.items()})
        return [{"predicted_score": round(float(score), 3)} for score in scores]

    outcomes = batch.run_batch(list(range(len(table))), load, predict, CHUNK_ROWS, desc="scoring", unit="row")
    out = batch.outcome_table("anime_id", table["anime_id"].tolist(), outcomes, ["predicted_score"])
    out.insert(1, "name", table["name"])
    print(f"{sum(o.ok for o in outcomes)} of {len(table)} rows scored with {model_file.name} ({args.kind} model)")
    batch.finish(out, outcomes, args.out, "rows")


def poster_paths(csv, table, images):
    """Each row's poster: the CSV's image_path column if it has one (None where blank), else
    IMAGES/<anime_id>.jpg."""
    import pandas as pd

    from animeml.core.io import PipelineError

    columns = pd.read_csv(csv, nrows=0).columns
    if "image_path" in columns:
        given = pd.read_csv(csv, usecols=["image_path"], dtype=str, keep_default_na=False)["image_path"]
        return [csv.parent / p if p.strip() else None for p in given]
    if images is None:
        raise PipelineError(f"{csv} has no image_path column: give the posters' folder with --images")
    return [images / f"{anime_id}.jpg" for anime_id in table["anime_id"]]


if __name__ == "__main__":
    cli.run(main)
