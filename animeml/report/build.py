"""Write the report: `index.html` and one page per task (see `pages.PAGES`) as static files that open from disk.

Files under the output folder are linked relatively; figures and CSVs elsewhere in the data folder are copied into
`<out>/files/` (only when changed), so the folder needs no server and the app can serve it as it is.
"""
import json
import shutil
import time
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from animeml.core.io import atomic_path
from animeml.report.pages import PAGES
from animeml.report.results import results_rows

MAX_ROWS = 25  # longer tables show their first rows and link to the CSV
GALLERY_LIMIT = 48  # thumbnails per gallery (face detections may be hundreds)
HIDDEN_SIDECAR_KEYS = {"run"}


def environment():
    return Environment(loader=PackageLoader("animeml.report"), autoescape=select_autoescape())


class Builder:
    def __init__(self, data_dir, out_dir):
        self.data_dir, self.out_dir = Path(data_dir).resolve(), Path(out_dir).resolve()

    def href(self, path):
        """A link from a page in `out_dir` to `path`: relative when inside, else to a copy under files/."""
        path = Path(path).resolve()
        if not path.is_relative_to(self.out_dir):
            copy = self.out_dir / "files" / path.relative_to(self.data_dir)
            stat = path.stat()
            if not copy.exists() or copy.stat().st_size != stat.st_size or copy.stat().st_mtime < stat.st_mtime:
                with atomic_path(copy) as tmp:
                    shutil.copyfile(path, tmp)
            path = copy
        return path.relative_to(self.out_dir).as_posix()

    def glob(self, patterns):
        found = []
        for pattern in patterns:
            found += [p for p in sorted(self.data_dir.glob(pattern)) if p.is_file() and p not in found]
        return found

    def table(self, csv):
        try:
            frame = pd.read_csv(csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            return {"name": csv.name, "href": self.href(csv), "error": f"unreadable: {type(err).__name__}"}
        return {"name": csv.name, "href": self.href(csv), "rows": len(frame), "shown": MAX_ROWS,
                "html": with_intervals(frame.head(MAX_ROWS)).to_html(index=False, border=0, na_rep="",
                                                                       classes="data")}

    def section(self, section):
        tables = self.glob(section.tables)
        figures = self.glob(section.figures)
        gallery = self.glob(section.gallery)
        records = self.glob(section.json)
        present = bool(tables or figures or gallery or records)
        fallback = self.href(tables[0]) if tables else None
        return {
            "title": section.title, "command": section.command, "note": section.note, "present": present,
            "tables": [self.table(csv) for csv in tables],
            "figures": [{"name": png.name, "src": self.href(png), "csv": self.figure_csv(png) or fallback}
                        for png in figures],
            "gallery": [{"name": png.name, "src": self.href(png)} for png in gallery[:GALLERY_LIMIT]],
            "gallery_more": max(0, len(gallery) - GALLERY_LIMIT),
            "json": [{"name": path.name, "href": self.href(path), "items": flat_items(read_json(path))}
                     for path in records],
        }

    def figure_csv(self, png):
        for name in (png.with_suffix(".csv").name, png.stem.replace("_curve", "_history") + ".csv"):
            if (png.parent / name).is_file():
                return self.href(png.parent / name)
        return None

    def models(self, page):
        found = []
        for sidecar in self.glob(f"models/{pattern}" for pattern in page.models):
            data = read_json(sidecar)
            run = data.get("run") if isinstance(data.get("run"), dict) else None
            shown = run or {k: v for k, v in data.items() if k not in HIDDEN_SIDECAR_KEYS}
            found.append({"name": sidecar.stem, "run": run, "items": flat_items(shown)})
        return found

    def runs(self, page, shown):
        """The latest run record of each step whose name starts with one of the page's prefixes, unless a model
        sidecar of the page already shows it (`shown`: (step, started) pairs)."""
        latest = {}
        for path in sorted(self.data_dir.glob("runs/*.json")):  # names end in the start time: later wins
            record = read_json(path)
            step = str(record.get("step", ""))
            if any(step.startswith(prefix) for prefix in page.runs):
                latest[step] = (record, path.name)
        return [{"name": step, "file": name, "items": flat_items(record)} for step, (record, name) in latest.items()
                if (step, record.get("started")) not in shown]

    def page(self, page):
        sections = [self.section(section) for section in page.sections]
        models = self.models(page)
        shown = {(m["run"].get("step"), m["run"].get("started")) for m in models if m["run"]}
        return {"name": page.name, "title": page.title, "sections": sections, "models": models,
                "runs": self.runs(page, shown), "done": sum(s["present"] for s in sections)}


def build_report(data_dir, out_dir):
    """Write every page and index.html into `out_dir`; returns the pages written and the seconds it took."""
    start = time.perf_counter()
    builder = Builder(data_dir, out_dir)
    env = environment()
    built = [builder.page(page) for page in PAGES]
    nav = [(page["name"], page["title"]) for page in built]
    written = []
    for page in built:
        written.append(write(env, "page.html", builder.out_dir / f"{page['name']}.html", page=page, nav=nav))
    with atomic_path(builder.out_dir / "report.css") as tmp:
        shutil.copyfile(Path(__file__).parent / "templates" / "report.css", tmp)
    written.append(write(env, "index.html", builder.out_dir / "index.html", pages=built, nav=nav,
                         results=results_rows(builder.data_dir), data_dir=str(builder.data_dir),
                         built=time.strftime("%Y-%m-%d %H:%M:%S %Z")))
    return written, time.perf_counter() - start


def write(env, template, path, **context):
    with atomic_path(path) as tmp:
        tmp.write_text(env.get_template(template).render(**context), encoding="utf-8")
    return path


def with_intervals(frame, digits=3):
    """Numbers rounded; a metric `m` with `m_low` and `m_high` columns becomes one `m [low, high]` column."""
    shown = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        if column.endswith(("_low", "_high")) and column.rsplit("_", 1)[0] in frame.columns:
            continue
        values = frame[column]
        if values.dtype.kind == "f" and values.notna().any() and (values.dropna() % 1 == 0).all():
            values = values.astype("Int64")  # whole numbers read as float because of a missing value
        shown[column] = values.map(lambda v: number(v, digits)).astype(object).where(values.notna(), "")
        low, high = f"{column}_low", f"{column}_high"
        if low in frame.columns and high in frame.columns:
            shown[column] = [f"{number(v, digits)} [{number(a, digits)}, {number(b, digits)}]"
                             if pd.notna(v) and pd.notna(a) else number(v, digits)
                             for v, a, b in zip(frame[column], frame[low], frame[high])]
    return shown


def number(value, digits=3):
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.{digits}f}"
    return value


def read_json(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        return {"unreadable": f"{path.name}: {type(err).__name__}"}
    return data if isinstance(data, dict) else {"value": data}


def flat_items(data, prefix="", limit=12):
    """Nested dicts as (dotted key, text) pairs; long lists shortened (a sidecar's 500 tag names)."""
    items = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items += flat_items(value, f"{name}.", limit)
        elif isinstance(value, list) and len(value) > limit:
            items.append((name, ", ".join(map(str, value[:limit])) + f", ... ({len(value)} in all)"))
        elif isinstance(value, list):
            items.append((name, ", ".join(map(str, value))))
        else:
            items.append((name, "" if value is None else str(value)))
    return items


def default_out_dir(data_dir):
    return Path(data_dir) / "reports"
