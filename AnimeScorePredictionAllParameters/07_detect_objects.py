"""Step 07: count COCO objects (Ultralytics YOLO) and anime faces (OpenCV cascade) on every poster, then rank-
correlate each frequent count with the score.

    python AnimeScorePredictionAllParameters/07_detect_objects.py --weights ../shared/models/yolov8n_int8.tflite

Counts go to data/anime_all_objects_detected.csv (one row per poster, one column per class); a rerun only counts
posters not yet in that file. Correlations (Spearman, one observation per anime, BH-adjusted p-values) go to
data/reports/analysis/object_score_correlations.csv and .png.
"""
import argparse
from pathlib import Path

from animeml.core import paths
from animeml.core.io import PipelineError, write_csv
from animeml.core.cli import run
from animeml.score.detection import count_posters, load_detector, plot_correlations, score_correlations
from animeml.core.faces import DEFAULT_CASCADE, load_cascade
from animeml.core.table import read_merged


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--merged", type=Path, default=paths.merged_csv(), help="output of step 03")
    parser.add_argument("--weights", default="yolov8n.pt",
                        help="YOLO weights: a name Ultralytics downloads, or a local .pt/.onnx/.tflite file")
    parser.add_argument("--face-cascade", type=Path, default=DEFAULT_CASCADE)
    parser.add_argument("--conf", type=float, default=0.25, help="minimum detection confidence")
    parser.add_argument("--min-posters", type=int, default=20,
                        help="correlate only classes found on at least this many posters")
    parser.add_argument("--out", type=Path, default=paths.data_dir() / "anime_all_objects_detected.csv")
    parser.add_argument("--reports", type=Path, default=paths.reports_dir() / "analysis")
    args = parser.parse_args()
    if not args.merged.exists():
        raise PipelineError(f"{args.merged} not found: run step 03 (03_merge_data.py) first")

    merged = read_merged(args.merged)
    cascade = load_cascade(args.face_cascade)
    detector = load_detector(args.weights)
    counts = count_posters(merged[["image_path", "anime_id"]], args.out, detector, cascade, conf=args.conf)

    scores = merged.groupby("anime_id")["score"].first()
    correlations = score_correlations(counts, scores, min_posters=args.min_posters)
    write_csv(correlations, args.reports / "object_score_correlations.csv")
    plot_correlations(correlations, args.reports / "object_score_correlations.png")
    top = ", ".join(f"{r['class']} {r['spearman_rho']:+.2f} (p={r['p_value']:.2g})"
                    for r in correlations.head(5).to_dict("records"))
    print(f"wrote {args.out}: {len(counts)} posters; strongest rank correlations with score: {top}")


if __name__ == "__main__":
    run(main)
