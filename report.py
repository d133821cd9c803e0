"""Write the results report: data/reports/index.html and one page per task (score, analysis, genres, characters and
tags, recommendation), static files that open from disk without a server.

    python report.py                      # -> data/reports/index.html
    python report.py --markdown           # print the README's results table from the same files
    python report.py --screenshots        # also screenshot each app tab and the report's front page (Chromium)

Each page shows the tables and figures its steps wrote (each figure links to its CSV) and the run records of its
models; a step whose files are missing shows "not run yet: <command>". Figures outside data/reports/ are copied
into data/reports/files/ so the folder stands alone.
"""
import os
from pathlib import Path

from animeml.core import cli, paths

SETTINGS = dict(out=None)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the data folder to report on (default: data/, or ANIMEML_DATA_DIR)")
    parser.add_argument("--out", type=Path, default=SETTINGS["out"],
                        help="folder for the HTML pages (default: <data-dir>/reports)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the README's results table (Markdown) and write no pages")
    parser.add_argument("--screenshots", action="store_true",
                        help="also start the app on a free local port and save a PNG of each tab and of the "
                             "report's front page into <out>/screenshots/ (needs /usr/bin/chromium)")
    args = cli.parse(parser, argv)
    data_dir = args.data_dir or paths.data_dir()
    if not data_dir.is_dir():
        raise cli.PipelineError(f"data folder not found: {data_dir}")

    from animeml.report.build import build_report, default_out_dir
    from animeml.report.results import markdown

    if args.markdown:
        print(markdown(data_dir))
        return
    out = args.out or default_out_dir(data_dir)
    written, seconds = build_report(data_dir, out)
    print(f"wrote {len(written)} pages in {seconds:.1f} s: open {out / 'index.html'}")
    if args.screenshots:
        from animeml.report.screenshots import take_screenshots
        os.environ["ANIMEML_DATA_DIR"] = str(Path(data_dir).resolve())  # the app reads the same data
        shots = take_screenshots(out / "index.html", out / "screenshots")
        print(f"wrote {len(shots)} screenshots into {out / 'screenshots'}")


if __name__ == "__main__":
    cli.run(main)
