"""The anime app in a browser: search by name and genre, details, favourites and recommendations, characters and
tags of an uploaded image, and the results report.

    python app.py                         # http://127.0.0.1:8000
    python app.py --port 8080 --data-dir /path/to/data

It loads the anime table, the recommendation index and the trained models once at start (a missing one leaves
its tab saying which step makes it) and uses the favourites file of Recommendation/favorites.py.
"""
import os
from pathlib import Path

from animeml.core import cli

SETTINGS = dict(host="127.0.0.1", port=8000)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--host", default=SETTINGS["host"], help="address to listen on (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=cli.non_negative_int, default=SETTINGS["port"], help="port to listen on")
    parser.add_argument("--data-dir", type=Path, help="the data folder (default: data/, or ANIMEML_DATA_DIR)")
    args = cli.parse(parser, argv)
    if args.data_dir is not None:
        if not args.data_dir.is_dir():
            raise cli.PipelineError(f"data folder not found: {args.data_dir}")
        os.environ["ANIMEML_DATA_DIR"] = str(args.data_dir.resolve())

    import uvicorn
    from animeml.app.main import create_app

    print("loading the table, index and models ...", flush=True)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    cli.run(main)
