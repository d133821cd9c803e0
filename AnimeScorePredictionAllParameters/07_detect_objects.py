"""Step 07: count COCO objects (Ultralytics YOLO) and anime faces (OpenCV cascade) on every poster, then rank-
correlate each frequent count with the score.

    python AnimeScorePredictionAllParameters/07_detect_objects.py --weights ../shared/models/yolov8n_int8.tflite

Counts go to data/anime_all_objects_detected.csv (one row per poster, one column per class; a poster that cannot
be read has empty counts and its reason); a rerun only counts posters not yet counted in that file. Correlations
(Spearman, one observation per anime, BH-adjusted p-values) go to data/reports/analysis/object_score_correlations.csv
and .png.
"""
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.faces import DEFAULT_CASCADE

SETTINGS = dict(
    weights="yolov8n.pt",
    conf=0.25,
    min_posters=20,
)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--merged", type=Path, default=paths.merged_csv(), help="posters + metadata, output of step 03")
    parser.add_argument("--weights", default=SETTINGS["weights"],
                        help="YOLO weights: a name Ultralytics downloads, or a local .pt/.onnx/.tflite file")
    parser.add_argument("--face-cascade", type=Path, default=DEFAULT_CASCADE, help="OpenCV anime-face cascade XML")
    parser.add_argument("--conf", type=cli.probability, default=SETTINGS["conf"], help="minimum detection confidence")
    parser.add_argument("--min-posters", type=cli.positive_int, default=SETTINGS["min_posters"],
                        help="correlate only classes found on at least this many posters")
    parser.add_argument("--out", type=Path, default=paths.data_dir() / "anime_all_objects_detected.csv",
                        help="counts per poster (a rerun only counts posters not yet in it)")
    parser.add_argument("--reports", type=Path, default=paths.reports_dir() / "analysis",
                        help="folder of the correlation CSV and plot")
    args = cli.parse(parser, argv)

    from animeml.core.faces import load_cascade
    from animeml.core.io import PipelineError, write_csv
    from animeml.core.runs import RunRecord
    from animeml.core.table import read_merged
    from animeml.score.detection import (count_posters, counted, load_detector, plot_correlations,
                                         score_correlations)

    if not args.merged.exists():
        raise PipelineError(f"{args.merged} not found: run step 03 (03_merge_data.py) first")
    record = RunRecord("score/07_detect_objects", cli.settings_of(args),
                       inputs={"merged": args.merged, "weights": args.weights, "face_cascade": args.face_cascade})
    merged = read_merged(args.merged)
    cascade = load_cascade(args.face_cascade)
    detector = load_detector(args.weights)
    counts = count_posters(merged[["image_path", "anime_id"]], args.out, detector, cascade, conf=args.conf)

    scores = merged.groupby("anime_id")["score"].first()
    correlations = score_correlations(counts, scores, min_posters=args.min_posters)
    write_csv(correlations, args.reports / "object_score_correlations.csv")
    plot_correlations(correlations, args.reports / "object_score_correlations.png")
    skipped = len(counts) - len(counted(counts))
    record.finish({"posters": len(counts), "skipped": skipped,
                   "spearman_rho": dict(zip(correlations["class"], correlations["spearman_rho"]))})
    top = ", ".join(f"{r['class']} {r['spearman_rho']:+.2f} (p={r['p_value']:.2g})"
                    for r in correlations.head(5).to_dict("records"))
    skipped_note = f" ({skipped} skipped: see its reason column)" if skipped else ""
    print(f"wrote {args.out}: {len(counts)} posters{skipped_note}; strongest rank correlations with score: {top}")


if __name__ == "__main__":
    cli.run(main)
