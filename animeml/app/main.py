"""The app's routes. `create_app()` loads the table, index and models once (AppState) and serves:

    /anime            search by name (substring, else the CLI's fuzzy title match) and genre, paged, with posters
    /anime/{id}       details; a star adds it to the favourites
    /favorites        the favourites (the SQLite file of Recommendation/favorites.py), remove, Recommend
    /characters       upload an image: faces boxed and named with confidences
    /tags             upload an image: tags with confidences above a threshold, and a caption if a model exists
    /reports/         the static report of report.py
"""
import base64
import io
import tempfile
import time
from pathlib import Path

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from animeml.app.state import STEP_REPORT, AppState
from animeml.core import paths
from animeml.core.io import PipelineError

HERE = Path(__file__).parent
PAGE_SIZE = 24
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
UPLOAD_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/bmp": ".bmp",
                "image/gif": ".gif"}
DEFAULT_K = 10
MAX_K = 50


class BadUpload(PipelineError):
    """An upload that is refused; the message is shown on the page."""


def create_app(state=None):
    state = state or AppState()
    app = FastAPI(title="Anime ML", docs_url=None, redoc_url=None)
    templates = Jinja2Templates(directory=HERE / "templates")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.mount("/reports", StaticFiles(directory=paths.reports_dir(), html=True, check_dir=False), name="reports")

    def page(request, name, tab, status_code=200, **context):
        return templates.TemplateResponse(request, name, {"tab": tab, "missing": state.missing, **context},
                                          status_code=status_code)

    def message(request, tab, text, status_code):
        return page(request, "message.html", tab, status_code=status_code, text=text)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return message(request, None, exc.detail if exc.status_code != 404 else "page not found", exc.status_code)

    @app.exception_handler(PipelineError)
    async def pipeline_error(request, exc):  # e.g. a corrupt favourites file: the library's one line
        return message(request, None, str(exc), 500)

    @app.exception_handler(Exception)
    async def any_error(request, exc):  # never a stack trace on the page; the server log has it
        return message(request, None, f"something went wrong ({type(exc).__name__}); see the server log", 500)

    @app.get("/", include_in_schema=False)
    def home():
        return RedirectResponse("/anime", status_code=303)

    # --- anime -----------------------------------------------------------------------------------------

    @app.get("/anime", response_class=HTMLResponse)
    def anime(request: Request, q: str = "", genre: list[str] = Query([]), page_number: int = Query(1, alias="page")):
        rec = state.recommender
        if rec is None:
            return page(request, "anime.html", "anime", q=q, genre=genre)
        start = time.perf_counter()
        q, chosen = q.strip(), [g for g in genre if g]
        found = rec.search(q or None, chosen, limit=rec.n)
        matched, suggestions = None, []
        if q and found.empty:  # no substring hit: the CLI's fuzzy title match, else the closest names
            try:
                row, _ = rec.match_title(q)
                found = rec.table.loc[[row], found.columns].fillna({"english_name": "", "genres": ""})
                matched = rec.table.at[row, "name"]
            except PipelineError:
                suggestions = rec.suggest(q)
        pages = max(1, -(-len(found) // PAGE_SIZE))
        page_number = min(max(page_number, 1), pages)
        shown = found.iloc[(page_number - 1) * PAGE_SIZE: page_number * PAGE_SIZE]
        favourite_ids = set(favorites_table()["anime_id"]) if len(shown) else set()
        server_ms = 1000 * (time.perf_counter() - start)
        response = page(request, "anime.html", "anime", q=q, genre=chosen, genres=state.genres,
                        rows=shown.to_dict("records"), total=len(found), page_number=page_number, pages=pages,
                        matched=matched, suggestions=suggestions, posters=state.posters, favourites=favourite_ids,
                        server_ms=server_ms)
        response.headers["Server-Timing"] = f"search;dur={server_ms:.1f}"
        return response

    @app.get("/anime/{anime_id}", response_class=HTMLResponse)
    def details(request: Request, anime_id: int):
        rec = state.recommender
        if rec is None or anime_id not in rec.row_of:
            return message(request, "anime", f"no anime with id {anime_id} in the table", 404)
        row = rec.row_of[anime_id]
        fields = rec.details(row)
        favourite = anime_id in set(favorites_table()["anime_id"])
        return page(request, "details.html", "anime", anime_id=anime_id, fields=fields.to_dict(),
                    has_poster=anime_id in state.posters, favourite=favourite)

    @app.get("/poster/{anime_id}")
    def poster(anime_id: int):
        path = state.posters.get(anime_id)
        if path is None:
            raise StarletteHTTPException(404)
        return FileResponse(path)

    # --- favourites and recommendations -----------------------------------------------------------------

    @app.post("/favorites/add")
    def favorite_add(request: Request, anime_id: int = Form(...), back: str = Form("")):
        rec = state.recommender
        if rec is None or anime_id not in rec.row_of:
            return message(request, "favorites", f"no anime with id {anime_id} in the table", 404)
        with favorites() as db:
            db.add(anime_id, rec.name(rec.row_of[anime_id]))
        return RedirectResponse(local(back) or f"/anime/{anime_id}", status_code=303)

    @app.post("/favorites/remove")
    def favorite_remove(anime_id: int = Form(...), back: str = Form("")):
        with favorites() as db:
            db.remove(anime_id)
        return RedirectResponse(local(back) or "/favorites", status_code=303)

    @app.get("/favorites", response_class=HTMLResponse)
    def favorites_page(request: Request, recommend: bool = False, exclude_franchise: bool = False,
                       k: int = DEFAULT_K):
        listed = favorites_table()
        context = {"favourites": listed.to_dict("records"), "exclude_franchise": exclude_franchise,
                   "k": min(max(k, 1), MAX_K), "recommendations": None}
        if recommend and len(listed) and "recommend" not in state.missing and state.recommender is not None:
            start = time.perf_counter()
            context["recommendations"] = recommend_for(state.recommender, listed["anime_id"], context["k"],
                                                       exclude_franchise)
            context["server_ms"] = 1000 * (time.perf_counter() - start)
        response = page(request, "favorites.html", "favorites", **context)
        if "server_ms" in context:
            response.headers["Server-Timing"] = f"recommend;dur={context['server_ms']:.1f}"
        return response

    # --- uploads: characters and tags -------------------------------------------------------------------

    @app.get("/characters", response_class=HTMLResponse)
    def characters_form(request: Request):
        return page(request, "characters.html", "characters")

    @app.post("/characters", response_class=HTMLResponse)
    def characters(request: Request, image: UploadFile = File(None)):
        if state.characters is None:
            return page(request, "characters.html", "characters", status_code=503)
        from animeml.characters.classifier import name_faces
        from animeml.core.faces import detect_faces, draw_boxes

        try:
            rgb = read_upload(image)
        except BadUpload as err:
            return page(request, "characters.html", "characters", error=str(err), status_code=400)
        model, sidecar = state.characters
        boxes = detect_faces(rgb, state.cascade, **state.detector)
        names, confidences = name_faces(model, sidecar["labels"], rgb, boxes, sidecar["image_size"])
        captions = [f"{name} {confidence:.2f}" for name, confidence in zip(names, confidences)]
        faces = [{"name": name, "confidence": float(confidence), "box": [int(v) for v in box[:4]]}
                 for name, confidence, box in zip(names, confidences, boxes)]
        return page(request, "characters.html", "characters", faces=faces, filename=image.filename,
                    drawn=png_data_url(draw_boxes(rgb, boxes, captions)))

    @app.get("/tags", response_class=HTMLResponse)
    def tags_form(request: Request):
        return page(request, "tags.html", "tags", threshold="")

    @app.post("/tags", response_class=HTMLResponse)
    def tags(request: Request, image: UploadFile = File(None), threshold: str = Form("")):
        if state.tagger is None:
            return page(request, "tags.html", "tags", threshold=threshold, status_code=503)
        from animeml.characters.classifier import predict_images
        from animeml.characters.tags import chosen_tags, tag_thresholds

        try:
            chosen = parse_threshold(threshold)
            rgb = read_upload(image)
        except BadUpload as err:
            return page(request, "tags.html", "tags", error=str(err), threshold=threshold, status_code=400)
        model, sidecar = state.tagger
        # predicted and decoded as tag_images.py does, the way its thresholds were tuned
        probabilities = predict_images(model, [rgb], sidecar["image_size"], flip=sidecar.get("flip", False))
        cut = tag_thresholds(sidecar, chosen)
        found = [{"tag": tag, "confidence": score, "threshold": cut[tag]}
                 for tag, score in chosen_tags(probabilities, sidecar, chosen)[0]]
        caption = describe(state.captioner, rgb) if state.captioner else None
        return page(request, "tags.html", "tags", tags=found, caption=caption, threshold=threshold,
                    filename=image.filename, image=png_data_url(rgb, max_side=384))

    # --- the report -------------------------------------------------------------------------------------

    @app.get("/report", response_class=HTMLResponse)
    def report(request: Request):
        if (paths.reports_dir() / "index.html").is_file():
            return RedirectResponse("/reports/index.html", status_code=303)
        return message(request, "reports", f"no report in {paths.reports_dir()} yet; run {STEP_REPORT}", 404)

    return app


# --- helpers -------------------------------------------------------------------------------------------

def favorites():
    """The favourites SQLite file of Recommendation/favorites.py, opened per request (a connection belongs to
    one thread), as a context manager that closes it."""
    from contextlib import closing
    from animeml.recommendation import Favorites

    return closing(Favorites(paths.recommendation_dir() / "favorites.sqlite"))


def favorites_table():
    with favorites() as db:
        return db.list()


def recommend_for(rec, anime_ids, k, exclude_franchise):
    """Top-k hybrid recommendations for the favourites (both component scores, and the favourite each is
    recommended because of), the same calls as recommend.py --favorites."""
    rows = [rec.row_of[i] for i in anime_ids if i in rec.row_of]
    if not rows:
        return []
    result = rec.recommend(rows)
    excluded = set(rec.franchise[rows]) if exclude_franchise else ()
    top = rec.top(result.scores, k, exclude_rows=rows, exclude_franchises=excluded)
    return rec.table_of(top, result, because_of=True)


def describe(captioner, rgb):
    """The caption of an RGB image by a BLIP or Keras captioner, the calls of caption_images.py."""
    kind, (first, second) = captioner
    if kind == "blip":
        from PIL import Image
        from animeml.characters.captions import generate_captions
        return generate_captions(first, second, [Image.fromarray(rgb)])[0]
    from animeml.characters import captioner as keras_captioner
    encoded = png_bytes(rgb)
    return keras_captioner.caption_images(first, second["vocabulary"], lambda i: encoded, 1, second["image_size"],
                                          desc=None)[0]


def local(url):
    """`url` if it is a path on this site (never a redirect elsewhere), else ''."""
    return url if url.startswith("/") and not url.startswith("//") else ""


def parse_threshold(text):
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadUpload(f"threshold {text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise BadUpload(f"threshold {value:g} is not in [0, 1]")
    return value


def read_upload(upload):
    """An uploaded image as an RGB uint8 array: type and size checked, written to a temporary folder (deleted
    after), header pixel count checked before decoding (animeml.core.imagefile). BadUpload with the reason."""
    from animeml.core.imagefile import ImageUnreadable, read_rgb

    if upload is None or not upload.filename:
        raise BadUpload("choose an image file to upload")
    suffix = Path(upload.filename).suffix.lower()
    if upload.content_type not in UPLOAD_TYPES and suffix not in UPLOAD_TYPES.values():
        raise BadUpload(f"{upload.filename}: {upload.content_type or 'unknown type'} is not an image "
                        f"(JPEG, PNG, WebP, BMP or GIF)")
    with tempfile.TemporaryDirectory(prefix="animeml-upload-") as folder:
        path = Path(folder) / f"upload{suffix if suffix in UPLOAD_TYPES.values() else ''}"
        size = 0
        with open(path, "wb") as out:
            while chunk := upload.file.read(1 << 20):
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise BadUpload(f"{upload.filename} is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
                out.write(chunk)
        try:
            return read_rgb(path, max_pixels=MAX_UPLOAD_PIXELS)
        except ImageUnreadable as err:
            raise BadUpload(str(err).replace(str(path), upload.filename)) from None


def png_bytes(rgb, max_side=None):
    from PIL import Image

    image = Image.fromarray(rgb)
    if max_side:
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_url(rgb, max_side=None):
    """An RGB array as an inline PNG (the page carries the drawn image; nothing is kept on disk)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb, max_side)).decode()
