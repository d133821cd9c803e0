"""Screenshots of each app tab and of the report's front page, with headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium; also the browser and local server the browser test uses."""
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from animeml.core.io import PipelineError, atomic_path
from animeml.core.paths import SHARED

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
START_TIMEOUT = 60  # seconds for the app to load its models and listen
PAGE_TIMEOUT_S = 60  # seconds for a page to replace the one whose form was submitted
SAMPLE_ILLUSTRATION = SHARED / "data" / "characters" / "illustrations" / "ahagon_umiko_0.jpg"  # has a face
TABS = {"anime": "/anime?q=bebop", "favorites": "/favorites?recommend=true", "characters": "/characters",
        "tags": "/tags", "reports": "/report"}


def browser_missing():
    """Why no headless browser can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} not found: apt-get install -y --no-install-recommends chromium chromium-driver"
    return None


@contextmanager
def chrome(width=1280, height=1000):
    """A headless Chromium (root needs --no-sandbox) with a fresh profile folder, closed afterwards."""
    from selenium import webdriver

    missing = browser_missing()
    if missing:
        raise PipelineError(missing)
    with tempfile.TemporaryDirectory(prefix="animeml-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROME_FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
        driver.set_page_load_timeout(60)
        try:
            yield driver
        finally:
            driver.quit()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve(app):
    """Run a FastAPI app with Uvicorn in a thread on a free local port; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise PipelineError(f"the app did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def screenshot(driver, path):
    with atomic_path(path) as tmp:
        tmp.write_bytes(driver.get_screenshot_as_png())
    return path


def page_wait(driver, timeout_s=PAGE_TIMEOUT_S):
    """A bounded wait that looks again when Chromium answers a lookup made while a page is replaced with an
    "inspector error" (a WebDriverException, not a stale element) instead of failing on it."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, ignored_exceptions=(StaleElementReferenceException, WebDriverException))


def click_to_new_page(driver, wait, element_id=None, link_text=None):
    """Click what loads a new page (by id, or a link by its text) and wait until the old one is gone: a lookup right
    after the click may otherwise find an element of the page being replaced."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    old_page = driver.find_element(By.TAG_NAME, "html")
    wait.until(seen.element_to_be_clickable((By.ID, element_id) if element_id else (By.LINK_TEXT, link_text))).click()
    wait.until(seen.staleness_of(old_page))


def take_screenshots(report_index, out_dir):
    """`<tab>.png` for every app tab (the app on a free local port) and `report.png` of the report's front page."""
    from animeml.app.main import create_app

    shots = []
    with chrome() as driver:
        driver.get(Path(report_index).resolve().as_uri())
        shots.append(screenshot(driver, Path(out_dir) / "report.png"))
        with serve(create_app()) as url:
            for name, route in TABS.items():
                driver.get(url + route)
                upload = driver.find_elements("id", "image")
                if upload and SAMPLE_ILLUSTRATION.is_file():  # the upload tabs with a result on the page
                    upload[0].send_keys(str(SAMPLE_ILLUSTRATION))
                    click_to_new_page(driver, page_wait(driver), "upload")  # the result page, not the form
                shots.append(screenshot(driver, Path(out_dir) / f"{name}.png"))
    return shots
