"""Misbehaving local servers for the hostile-input tests, built on conftest's LocalServer (127.0.0.1 only).

    add_jikan(server, fault)   # /v4/anime answering as Jikan would, or broken in one of JIKAN_FAULTS' ways
    add_images(server)         # image routes: good, huge-dimension PNG, redirect loop, redirect to file://, slow
"""
import json
import struct
import threading
import zlib

from conftest import jpeg_bytes

JSON = {"Content-Type": "application/json"}
JPEG = {"Content-Type": "image/jpeg"}
PER_PAGE = 2
PAGES = 3


def anime_item(mal_id, score=7.5):
    return {"mal_id": mal_id, "title": f"Anime {mal_id}", "score": score, "genres": [{"name": "Action"}],
            "synopsis": f"Story {mal_id}.", "type": "TV", "episodes": 12,
            "images": {"jpg": {"image_url": f"http://127.0.0.1:9/{mal_id}.jpg"}}}


def page(items, has_next):
    return 200, JSON, json.dumps({"pagination": {"has_next_page": has_next}, "data": items}).encode()


def _good(number):
    items = [anime_item((number - 1) * PER_PAGE + i + 1) for i in range(PER_PAGE)]
    return page(items, number < PAGES)


# fault -> handler(page number) -> (status, headers, body)
JIKAN_FAULTS = {
    "ok": _good,
    "retry_after_a_day": lambda n: (429, {"Retry-After": "86400", **JSON}, b'{"status": 429}'),
    "empty_pages_forever": lambda n: _good(1) if n == 1 else page([], True),
    "same_page_forever": lambda n: page([anime_item(1), anime_item(2)], True),
    "one_new_anime_forever": lambda n: page([anime_item(n)], True),
    "malformed_json": lambda n: (200, JSON, b'{"data": [{"mal_id": 1'),
    "html_page": lambda n: (200, {"Content-Type": "text/html"}, b"<html><body>Jikan is down</body></html>"),
    "item_without_mal_id": lambda n: page([anime_item(1), {"title": "no id"}], False),
    "mal_id_not_integer": lambda n: page([{"mal_id": "5.9", "title": "x"}], False),
    "data_not_a_list": lambda n: (200, JSON, json.dumps({"data": {"mal_id": 1}}).encode()),
    "answer_not_an_object": lambda n: (200, JSON, b"[1, 2, 3]"),
    "placeholder_scores": lambda n: page([anime_item(1, "N/A"), anime_item(2, 0), anime_item(3, None),
                                          anime_item(4, 15.5), anime_item(5, -3), anime_item(6, "8.25")], False),
}


def add_jikan(server, fault, prefix="/v4"):
    """`prefix/anime?page=N` answers as JIKAN_FAULTS[fault] does; returns the API base URL."""
    handler = JIKAN_FAULTS[fault]
    server.routes[f"{prefix}/anime"] = lambda request, query: handler(int(query.get("page", ["1"])[0]))
    return f"{server.url}{prefix}"


def png_bytes(width, height):
    """A valid 1-bit black PNG of any size: 12000x12000 compresses to about 17 KB but decodes to 144 M pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\0" * (1 + (width + 7) // 8)
    raw = zlib.compress(row * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def add_images(server, hang_seconds=30.0):
    """Image routes on `server`; `server.release` (an Event) ends every hanging request at once."""
    server.release = threading.Event()
    huge = png_bytes(12000, 12000)

    def redirect(location):
        return lambda request, query: (302, {"Location": location}, b"")

    def hang(request, query):
        server.release.wait(hang_seconds)
        return 200, JPEG, jpeg_bytes(seed=9)

    server.routes.update({
        "/ok/": lambda request, query: (200, JPEG, jpeg_bytes(seed=len(request.path))),
        "/huge/": lambda request, query: (200, {"Content-Type": "image/png"}, huge),
        "/loop/": lambda request, query: (302, {"Location": request.path}, b""),
        "/to-file/": redirect("file:///etc/passwd"),
        "/to-ftp/": redirect("ftp://127.0.0.1/x.jpg"),
        "/to-ok/": redirect("/ok/via-redirect.jpg"),
        "/hang/": hang,
    })
    return server
