"""One HTTP session for every download: http(s) only, a few redirects at most, retries with back-off on timeouts,
5xx and 429, and `Retry-After` obeyed only up to `max_wait` seconds, with a line saying so when it waits."""
import sys
import threading
import time
from urllib.parse import urljoin, urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

USER_AGENT = "animeml/0.1 (research pipeline)"
SCHEMES = ("http", "https")
MAX_REDIRECTS = 5


class UnsafeURL(requests.exceptions.RequestException):
    """A URL (or a redirect target) that is not http(s) with a host."""


class BadBody(requests.exceptions.RequestException):
    """A response body too large, or too slow to arrive."""


class Stopped(Exception):
    """The session was stopped (Ctrl-C) while a request waited to retry."""


def check_url(url):
    """`url` if it is an http(s) URL with a host, else UnsafeURL naming it."""
    try:
        parts = urlparse(str(url))
        ok = parts.scheme in SCHEMES and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise UnsafeURL(f"not an http(s) URL: {str(url)[:200]!r}")
    return url


def refuse_unsafe_redirect(response, *args, **kwargs):
    """A response hook: a redirect may only lead to another http(s) URL (never file://, ftp://, ...)."""
    if response.is_redirect:
        check_url(urljoin(response.url, response.headers["Location"]))


class CappedRetry(Retry):
    """urllib3's Retry whose waits can be cut short by `stop` (Ctrl-C) and that says when it obeys Retry-After."""

    def __init__(self, *args, stop=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop = stop or threading.Event()

    def new(self, **kwargs):
        retry = super().new(**kwargs)
        retry.stop = self.stop
        return retry

    def sleep(self, response=None):
        try:
            seconds = self.get_retry_after(response) if response and self.respect_retry_after_header else None
        except Exception:  # an unreadable Retry-After counts as none
            seconds = None
        if seconds:
            asked = response.headers.get("Retry-After", "").strip()
            capped = f" (capped by --max-wait; the server asked for {asked})" if seconds == self.retry_after_max else ""
            print(f"waiting {seconds:g} s before retrying {response.status}{capped}", file=sys.stderr)
        else:
            seconds = self.get_backoff_time()
        if self.stop.wait(max(0.0, seconds)):
            raise Stopped("stopped while waiting to retry")


class Session(requests.Session):
    """requests.Session with `stop`: an Event that, once set, cuts every retry wait short."""

    def __init__(self, retry, pool_size):
        super().__init__()
        self.stop = retry.stop
        adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self.headers["User-Agent"] = USER_AGENT
        self.max_redirects = MAX_REDIRECTS
        self.hooks["response"].append(refuse_unsafe_redirect)

    def request(self, method, url, *args, **kwargs):
        return super().request(method, check_url(url), *args, **kwargs)


def make_session(retries=4, backoff=0.5, pool_size=16, max_wait=60.0):
    # a refused connection is retried twice at most: a host that is down rarely comes back within seconds
    retry = CappedRetry(
        total=retries, connect=min(retries, 2), read=retries, status=retries, backoff_factor=backoff,
        backoff_max=max_wait, retry_after_max=max_wait, status_forcelist=[429, 500, 502, 503, 504],
        allowed_methods=["GET", "HEAD"], respect_retry_after_header=True, raise_on_status=False,
    )
    return Session(retry, pool_size)


def read_body(response, max_bytes, max_seconds, stop=None):
    """The body of a streamed response, at most `max_bytes` and within `max_seconds` (a server that sends a byte a
    second never trips a socket timeout), stopping early once `stop` is set."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BadBody(f"too large ({declared} bytes)")
    data, deadline = bytearray(), time.monotonic() + max_seconds
    for chunk in response.iter_content(64 * 1024):
        data += chunk
        if len(data) > max_bytes:
            raise BadBody(f"too large (over {max_bytes} bytes)")
        if time.monotonic() > deadline:
            raise BadBody(f"too slow (no complete answer within {max_seconds:g} s)")
        if stop is not None and stop.is_set():
            raise Stopped("interrupted")
    return bytes(data)


def failure_reason(err):
    """One short line for a failed request, for a failures CSV or an error message."""
    if isinstance(err, (UnsafeURL, BadBody)):
        return str(err)
    if isinstance(err, requests.exceptions.TooManyRedirects):
        return f"more than {MAX_REDIRECTS} redirects (a redirect loop?)"
    if isinstance(err, requests.exceptions.RetryError):
        return f"gave up after retries ({err.args[0].reason})"
    if isinstance(err, requests.exceptions.Timeout):
        return f"timeout ({type(err).__name__})"
    if isinstance(err, requests.exceptions.ConnectionError):  # after retries, urllib3's cause is only in the text
        text = str(err).lower()
        if "timed out" in text:
            return "timeout (no answer in time, after retries)"
        return "connection refused" if "refused" in text else f"connection error ({type(err).__name__})"
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "connection broken mid-body"
    if isinstance(err, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema)):
        return f"invalid URL ({str(err).splitlines()[0][:200]})"
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
