"""Step 09: the main characters of each anime (description and portrait), cleaned as the multimodal paper did, for
the popularity-before-release models (steps 10-11).

From the anime table, anime with a score and a synopsis of at least 20 words are asked from the Jikan v4 API
(`/anime/{id}/characters`, role Main, then `/characters/{id}/full` for `about` and the portrait URL) with the
rate-limited client of step 01: every answer is cached, so an interrupted run resumes where it stopped, and the
bar shows the time left (at Jikan's 60 requests a minute, the paper's 7,784 anime take several hours). Or give a
local --characters-csv (anime_id, character_id, name, role, about, image_url). Portraits are downloaded with the
step-02 downloader. Characters without a description or a portrait are dropped, then anime without a main
character left.

    python AnimeScorePredictionAllParameters/09_fetch_characters.py --limit 500
    python AnimeScorePredictionAllParameters/09_fetch_characters.py --characters-csv my_characters.csv
Writes data/raw/characters.csv (with a `portrait` column; what Jikan failed on in characters_failures.csv),
data/characters_mal/portraits/<character_id>.jpg
(+ failures.csv) and data/reports/popularity/dataset_{cleaning,statistics}.csv + dataset_summary.md, like the
paper's Tables 1-2.
"""
from pathlib import Path

from animeml.core import cli, paths
from animeml.core.io import PipelineError

JIKAN_API = "https://api.jikan.moe/v4"
SETTINGS = dict(requests_per_second=3.0, requests_per_minute=60, max_wait=60.0, workers=8)


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--anime-csv", type=Path, default=paths.raw_csv(), help="the anime table (step 01)")
    parser.add_argument("--characters-csv", type=Path,
                        help="read main characters from this CSV instead of Jikan (anime_id, character_id, name, "
                             "role, about, image_url)")
    parser.add_argument("--limit", type=cli.positive_int, help="at most N anime (those with a score and synopsis)")
    parser.add_argument("--api-base", type=cli.non_empty, default=JIKAN_API,
                        help="Jikan base URL (tests point it at a local server)")
    parser.add_argument("--requests-per-second", type=cli.positive_float,
                        default=SETTINGS["requests_per_second"], help="Jikan requests per second at most")
    parser.add_argument("--requests-per-minute", type=cli.positive_int, default=SETTINGS["requests_per_minute"],
                        help="Jikan requests per minute at most")
    parser.add_argument("--max-wait", type=cli.positive_float, default=SETTINGS["max_wait"],
                        help="longest wait in seconds for one Retry-After before giving up")
    parser.add_argument("--refresh", action="store_true", help="ask Jikan again instead of reading cached answers")
    parser.add_argument("--workers", type=cli.positive_int, default=SETTINGS["workers"],
                        help="parallel portrait downloads")
    parser.add_argument("--out", type=Path, help="default data/raw/characters.csv")
    parser.add_argument("--portraits-dir", type=Path, help="default data/characters_mal/portraits")
    args = cli.parse(parser, argv)

    from animeml.core.io import atomic_path, write_csv
    from animeml.core.posters import download_images
    from animeml.core.table import read_anime_table
    from animeml.score import popularity

    out = args.out or popularity.characters_csv()
    portraits = args.portraits_dir or popularity.portraits_dir()
    if args.characters_csv and args.characters_csv.resolve() == out.resolve():
        raise PipelineError(f"--characters-csv and the output are both {out}: give --out another file")
    table = read_anime_table(args.anime_csv)
    eligible = table[table["score"].notna()
                     & (table["synopsis"].map(popularity.word_count) >= popularity.MIN_SYNOPSIS_WORDS)]
    if args.limit:
        eligible = eligible.head(args.limit)
    if args.characters_csv:
        characters = popularity.read_characters_csv(args.characters_csv)
        characters = characters[characters["anime_id"].isin(eligible["anime_id"])]
    else:
        from animeml.core.jikan import JikanClient

        client = JikanClient(args.api_base, paths.data_dir() / "raw" / "jikan_characters",
                             requests_per_second=args.requests_per_second,
                             requests_per_minute=args.requests_per_minute, max_wait=args.max_wait,
                             refresh=args.refresh)
        hours = len(eligible) * 4 / args.requests_per_minute / 60  # about 3 main characters each, plus the list
        print(f"asking Jikan for the main characters of {len(eligible)} anime: about {hours:.1f} h at "
              f"{args.requests_per_minute} requests a minute, less for answers already cached")
        characters, failures = popularity.fetch_characters(client, eligible["anime_id"])
        write_csv(failures, out.with_name("characters_failures.csv"))
        if len(failures):
            print(f"{len(failures)} anime or characters Jikan failed on: {out.with_name('characters_failures.csv')}")
        if characters.empty and len(failures):
            raise PipelineError(f"Jikan failed on every anime asked (first: {failures['reason'].iloc[0]})")

    wanted = characters[characters["about"].notna() & characters["image_url"].notna()]
    jobs = sorted({(f"{c}.jpg", url) for c, url in zip(wanted["character_id"], wanted["image_url"])})
    downloaded, skipped, failed = download_images(jobs, portraits, portraits / "failures.csv",
                                                  workers=args.workers)
    anime, kept, steps = popularity.clean_dataset(table[table["anime_id"].isin(eligible["anime_id"])]
                                                  if args.limit else table, characters, portraits)
    if anime.empty:
        raise PipelineError("no anime left after cleaning: none has a main character with a description and a "
                            "portrait")
    write_csv(kept, out)
    reports = popularity.reports_dir()
    statistics = popularity.dataset_statistics(anime, kept)
    write_csv(steps, reports / "dataset_cleaning.csv")
    write_csv(statistics, reports / "dataset_statistics.csv")
    with atomic_path(reports / "dataset_summary.md") as tmp:
        tmp.write_text("\n".join([
            "# Popularity dataset", "", "## Cleaning (like the paper's Table 1)", "",
            popularity.markdown_frame(steps), "", "## What the models read (like the paper's Table 2)", "",
            popularity.markdown_frame(statistics), ""]))
    print(f"portraits: {downloaded} downloaded, {skipped} already there, {failed} failed "
          f"({portraits / 'failures.csv'})")
    print(f"wrote {out}: {len(kept)} main characters of {len(anime)} anime; summary in {reports}")


if __name__ == "__main__":
    cli.run(main)
