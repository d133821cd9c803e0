"""Step 10: popularity before release, the multimodal paper's model: synopsis, main characters' descriptions and
portraits -> MLP -> min-max scaled MAL score (Armenta-Segura and Sidorov, arXiv 2406.16961, Table 11).

Inputs, each optional (--inputs): the all-MiniLM-L6-v2 synopsis embedding; the descriptions embedding (each
character's description cut into chunks of at most 256 word pieces, embedded, averaged per character and over the
anime's main characters, so nothing is cut off; --truncate joins them and cuts at 256 tokens as the paper did); the
portraits through a frozen backbone (default efficientnet_lite0), averaged over the main characters.
--with-metadata adds what is known before release (genres, type, episodes, source, studios, year, ...);
--baseline tfidf-pixels is the paper's benchmark (TF-IDF of synopsis and descriptions, 16x16 portrait pixels).
--table-11 trains the paper's five experiments and ours (pooled descriptions, metadata added) in one run.
Every experiment uses the character-cluster split (data/splits/popularity_split.csv, made once, seeded).

    python AnimeScorePredictionAllParameters/10_train_popularity.py --inputs synopsis,descriptions,portraits
    python AnimeScorePredictionAllParameters/10_train_popularity.py --table-11
Writes data/models/popularity_<experiment>.h5 + .json, data/popularity/features/<experiment>.npz (the inputs
of every anime, for step 11) and a run record in data/runs/.
"""
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.io import PipelineError
from animeml.core.trainer_flags import add_training_flags

SETTINGS = dict(inputs="synopsis,descriptions,portraits", backbone="efficientnet_lite0", image_size=224,
                embedding_model="minilm", epochs=100, batch_size=64, learning_rate=1e-3, patience=10, hidden=256,
                dropout=0.3, val=0.15, test=0.15, split_seed=42, seed=0)


def experiments(args):
    """(name, input kinds, truncate) of each experiment this run trains."""
    from animeml.score.popularity import BASELINE, INPUTS, experiment_name

    if args.table_11:
        paper = [(list(INPUTS), True, False), (["synopsis"], False, False), (["descriptions"], True, False),
                 (["portraits"], False, False), (list(INPUTS), False, False), (list(INPUTS), False, True)]
        runs = [(experiment_name(kinds, truncate, metadata), kinds + ["metadata"] * metadata, truncate)
                for kinds, truncate, metadata in paper]
        return runs + [(BASELINE, ["tfidf", "pixels"], False)]
    if args.baseline:
        return [(BASELINE, ["tfidf", "pixels"], False)]
    kinds = [k.strip() for k in args.inputs.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(INPUTS))
    if unknown or not kinds:
        raise PipelineError(f"--inputs takes a comma-separated subset of {','.join(INPUTS)}, got {args.inputs!r}")
    name = experiment_name(kinds, args.truncate, args.with_metadata)
    return [(name, [k for k in INPUTS if k in kinds] + ["metadata"] * args.with_metadata, args.truncate)]


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--inputs", type=cli.non_empty, default=SETTINGS["inputs"],
                        help="comma-separated inputs: synopsis, descriptions, portraits")
    parser.add_argument("--truncate", action="store_true",
                        help="descriptions joined and cut at 256 tokens, as the paper did (default: chunked and "
                             "pooled, nothing cut off)")
    parser.add_argument("--with-metadata", action="store_true",
                        help="add metadata known before release (genres, type, episodes, source, studios, year)")
    parser.add_argument("--baseline", choices=["tfidf-pixels"],
                        help="the paper's benchmark instead: TF-IDF of synopsis and descriptions, 16x16 portraits")
    parser.add_argument("--table-11", action="store_true",
                        help="train every experiment of the paper's Table 11 and ours in one run")
    parser.add_argument("--anime-csv", type=Path, default=paths.raw_csv(), help="the anime table (step 01)")
    parser.add_argument("--characters-csv", type=Path, help="main characters (step 09; default "
                                                            "data/raw/characters.csv)")
    parser.add_argument("--portraits-dir", type=Path, help="portraits <character_id>.jpg (step 09; default "
                                                           "data/characters_mal/portraits)")
    parser.add_argument("--backbone", default=SETTINGS["backbone"], help="frozen backbone for the portraits")
    parser.add_argument("--image-size", type=cli.positive_int, default=SETTINGS["image_size"],
                        help="portrait size in pixels (square)")
    parser.add_argument("--embedding-model", choices=["minilm"], default=SETTINGS["embedding_model"],
                        help="sentence model (its tokenizer cuts the description chunks)")
    parser.add_argument("--epochs", type=cli.positive_int, default=SETTINGS["epochs"], help="most epochs")
    parser.add_argument("--batch-size", type=cli.positive_int, default=SETTINGS["batch_size"], help="batch size")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=SETTINGS["learning_rate"],
                        help="Adam learning rate")
    parser.add_argument("--patience", type=cli.positive_int, default=SETTINGS["patience"],
                        help="epochs without a better validation loss before stopping (best weights kept)")
    parser.add_argument("--hidden", type=cli.positive_int, default=SETTINGS["hidden"], help="width of the MLP")
    parser.add_argument("--dropout", type=cli.probability, default=SETTINGS["dropout"], help="dropout rate")
    parser.add_argument("--val", type=cli.probability, default=SETTINGS["val"],
                        help="share of anime in validation (split made once)")
    parser.add_argument("--test", type=cli.probability, default=SETTINGS["test"],
                        help="share of anime in test (split made once)")
    parser.add_argument("--split-seed", type=int, default=SETTINGS["split_seed"], help="seed of the cluster split")
    add_training_flags(parser, seed=SETTINGS["seed"], resume=False)
    args = cli.parse(parser, argv)
    if args.baseline and args.table_11:
        raise PipelineError("give --baseline or --table-11, not both")
    if args.val + args.test >= 1:
        raise PipelineError("--val + --test must leave anime for training")
    runs = experiments(args)

    from animeml.score import popularity

    characters_csv = args.characters_csv or popularity.characters_csv()
    portraits = args.portraits_dir or popularity.portraits_dir()
    if not characters_csv.exists():
        raise PipelineError(f"{characters_csv} not found: run 09_fetch_characters.py first")

    import torch  # noqa: F401  before TensorFlow: the other order can segfault (animeml.core.embeddings)
    import keras

    from animeml.core import trainer
    from animeml.core.runs import RunRecord
    from animeml.core.store import save_model
    from animeml.core.table import read_anime_table

    # seeded here so that a from-scratch portrait backbone (small_cnn) starts the same each run
    strategy = trainer.start(args.seed, args.deterministic, args.strategy, args.mixed_precision)
    anime, characters, _ = popularity.clean_dataset(read_anime_table(args.anime_csv),
                                                    popularity.read_characters_csv(characters_csv), portraits)
    split = popularity.load_or_make_split(popularity.split_path(), anime["anime_id"], characters,
                                          val=args.val, test=args.test, seed=args.split_seed)
    train, val = split == "train", split == "val"
    if train.sum() < 2 or val.sum() < 1:
        raise PipelineError(f"{len(anime)} anime after cleaning: too few for a train/validation split")
    scores = anime["score"].to_numpy(float)
    low, high = float(scores[train].min()), float(scores[train].max())
    target = (scores - low) / (high - low)
    settings = cli.settings_of(args)
    cache = {}

    def features_of(kind, truncate):
        """(features, learned) of one input kind, computed once for every experiment of this run."""
        key = (kind, truncate and kind == "descriptions")
        if key not in cache:
            features, learned = popularity.input_features([kind], anime, characters, split,
                                                          {**settings, "truncate": truncate})
            cache[key] = (features[kind], learned)
        return cache[key]

    for name, run_kinds, truncate in runs:
        parts = {kind: features_of(kind, truncate) for kind in run_kinds}
        inputs = {kind: features for kind, (features, _) in parts.items()}
        learned = {key: value for _, part in parts.values() for key, value in part.items()}
        record = RunRecord("popularity/10_train", {**settings, "experiment": name, "truncate": truncate},
                           inputs={"anime": args.anime_csv, "characters": characters_csv,
                                   "split": popularity.split_path()})
        keras.utils.set_random_seed(args.seed)
        model, history = popularity.train_model(inputs, target, train, val, strategy, hidden=args.hidden,
                                                dropout=args.dropout, learning_rate=args.learning_rate,
                                                batch_size=args.batch_size, epochs=args.epochs,
                                                patience=args.patience, name=f"popularity_{name}")
        val_mse = float(min(history.history["val_loss"]))
        features_file = popularity.features_path(name)
        popularity.save_features(features_file, anime["anime_id"], scores, split, inputs)
        metrics = {"val_mse_minmax": val_mse, "epochs": len(history.history["loss"]),
                   "train_anime": int(train.sum()), "val_anime": int(val.sum())}
        run = record.finish(metrics)
        sidecar = {"experiment": name, "inputs": list(inputs), "truncate": truncate, "score_range": [low, high],
                   "train_mean": float(target[train].mean()), "features": features_file.name,
                   "split": str(popularity.split_path().name), "backbone": args.backbone,
                   "image_size": args.image_size, "embedding_model": args.embedding_model, **learned, "run": run}
        path = popularity.model_path(name)
        save_model(model, path, sidecar)
        print(f"wrote {path}: {name}, validation MSE (min-max scale) {val_mse:.4f} after "
              f"{metrics['epochs']} epochs; {train.sum()} train / {val.sum()} validation anime")


if __name__ == "__main__":
    cli.run(main)
