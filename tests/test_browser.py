"""A real browser (headless Chromium + Selenium) on the report opened from disk and on the app on a free local port:
search "bebop", open Cowboy Bebop, star it, recommend and see its film, upload an illustration and see a named face,
and no console error anywhere. Skips with a message when Chromium or chromedriver is not installed."""
import pytest

from animeml.report.screenshots import browser_missing

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=f"no headless browser: {browser_missing()}")

ALL_IMAGES_LOADED = "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"


def images_loaded(driver):
    """After a click the new page may still be loading: wait for this (a broken image never passes)."""
    return driver.execute_script(ALL_IMAGES_LOADED)


def console_errors(driver):
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from test_app import tiny_data
    from test_report import tiny_run

    from animeml.report.build import build_report

    root = tiny_run(tiny_data(tmp_path_factory.mktemp("data")))
    build_report(root, root / "reports")
    return root


@pytest.fixture(scope="module")
def driver():
    from animeml.report.screenshots import chrome

    with chrome() as browser:
        yield browser


def test_report_opens_from_disk_with_every_image(data, driver):
    pages = sorted((data / "reports").glob("*.html"))
    assert len(pages) == 7
    for page in pages:
        driver.get(page.as_uri())
        assert driver.execute_script(ALL_IMAGES_LOADED), page.name
    driver.get((data / "reports" / "score.html").as_uri())
    assert len(driver.find_elements("css selector", "figure img")) >= 1
    assert console_errors(driver) == []


def test_app_search_favourite_recommend_and_faces(data, driver, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    from animeml.app.main import create_app
    from animeml.report.screenshots import click_to_new_page, page_wait, serve
    from test_app import CHARACTERS, FACE_IMAGE

    monkeypatch.setenv("ANIMEML_DATA_DIR", str(data))
    wait = page_wait(driver, 30)
    with serve(create_app()) as url:
        driver.get(url + "/anime")
        driver.find_element(By.ID, "q").send_keys("bebop")
        click_to_new_page(driver, wait, "search")
        click_to_new_page(driver, wait, link_text="Cowboy Bebop")
        assert wait.until(seen.text_to_be_present_in_element((By.ID, "title"), "Cowboy Bebop"))
        wait.until(images_loaded)  # its poster
        click_to_new_page(driver, wait, "star")
        wait.until(seen.text_to_be_present_in_element((By.ID, "star"), "in favourites"))  # the page reloaded

        click_to_new_page(driver, wait, "tab-favorites")
        assert wait.until(seen.text_to_be_present_in_element((By.ID, "favourites"), "Cowboy Bebop"))
        click_to_new_page(driver, wait, "recommend")
        recommended = (By.ID, "recommendations")
        assert wait.until(seen.text_to_be_present_in_element(recommended, "Cowboy Bebop: Tengoku no Tobira"))

        click_to_new_page(driver, wait, "tab-characters")
        if FACE_IMAGE.is_file():
            wait.until(seen.presence_of_element_located((By.ID, "image"))).send_keys(str(FACE_IMAGE))
            click_to_new_page(driver, wait, "upload")
            names = [cell.text for cell in wait.until(
                seen.presence_of_all_elements_located((By.CSS_SELECTOR, "#faces td.name")))]
            assert names and set(names) <= set(CHARACTERS)
            wait.until(images_loaded)  # the image with its boxes drawn

        click_to_new_page(driver, wait, "tab-reports")
        wait.until(seen.title_contains("Results"))
        wait.until(images_loaded)
    assert console_errors(driver) == []
    if not FACE_IMAGE.is_file():
        pytest.skip(f"{FACE_IMAGE} (../shared) is absent: the rest passed, the face upload was not tried")


def test_screenshots_of_every_app_tab_and_the_report(data, monkeypatch, tmp_path):
    from animeml.report.screenshots import TABS, take_screenshots

    monkeypatch.setenv("ANIMEML_DATA_DIR", str(data))
    shots = take_screenshots(data / "reports" / "index.html", tmp_path)
    assert sorted(p.name for p in shots) == sorted([f"{name}.png" for name in TABS] + ["report.png"])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in shots)
